"""The alignment handbook: recipes and the pieces TRL lacks for dSFT, dDPO, reward and value models."""

__version__ = "0.1.0"
