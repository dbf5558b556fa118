"""The alignment handbook: recipes and the pieces TRL lacks for dSFT, dDPO, reward and value models."""

import importlib
from collections.abc import Callable

__version__ = "0.1.0"


def entry_points(package: str, modules: dict[str, str]) -> Callable[[str], object]:
    """A package's module `__getattr__` that imports each documented entry point from its module on first use
    (`alignment.value.score_steps`), so that importing the package, as parsing its recipe does, loads no model code.
    `modules` maps a name to its module within `package`."""

    def __getattr__(name: str) -> object:
        if name not in modules:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{modules[name]}"), name)

    return __getattr__
