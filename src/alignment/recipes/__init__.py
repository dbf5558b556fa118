"""What a recipe is: strict parsing into dataclasses, former key names, and the dataclasses every stage shares.

- `parser`: YAML recipe + `--key value` overrides -> the script's dataclasses, strictly (`RecipeParser`,
  `RecipeError`).
- `aliases`: the key names of the original alignment-handbook and TRL's scripts, read as today's (one warning each).
- `dataset_forms`: the handbook's `dataset_mixture` and TRL's `dataset_name` forms, read as `dataset_mixer`.
- `arguments`: `ModelArguments`, `DataArguments`, `StageTrainingArguments` (the checks every stage config runs) and
  `Recipe`.

Parsing a recipe imports no trainer and no `datasets`: a typo costs seconds, not a model load.
"""
