"""Read a recipe's `dataset_mixer` into one `DatasetDict` with "train" and "test" splits, checking every row.

Sources are hub ids or local paths: a .json/.jsonl/.parquet file (a JSON file holds JSON Lines or one array of rows,
as UTF-8 with or without a byte-order mark, whatever its extension), a folder written by `save_to_disk` (a `Dataset`
or a `DatasetDict`), or a folder of such files, where a file's name is its split (`train.jsonl`, `test_sft.parquet`,
`train-00000-of-00002.parquet`). A lone file or saved `Dataset` has no split names of its own: in the Zephyr form it
is the source's train split, in the list form it is the entry's split. A JSON file is parsed strictly before anything
else reads it: invalid JSON, bytes that are not UTF-8 or an empty file stop with the file, line (and byte) named.

Each source is processed on its own, in this order, so that every count and every error names the source:

1. read the requested splits and select `columns` (list form);
2. convert its rows from their format (`format:`, or detected from its columns) to the stage's canonical row
   (`formats`: ShareGPT, Alpaca, TRL prompt-completion, OpenAI tool use);
3. check `required_columns`, then that all sources have the same columns (mixing needs one schema);
4. check every row with `validate_row` (train and test splits, before any subsampling, so a bad row is named by its
   index in the source as written): raise `InvalidRowError` at the first bad row, or with `skip_invalid_rows` drop
   it and count it by kind;
5. keep the source's `fraction`/`weight` of its train rows, sampled by `seed` (test splits are always kept whole, as
   in the original handbook: evaluation should not depend on how the training mixture is weighted);
6. when the source has no test split, hold out `test_split_size` of those kept train rows as its test split.

The counts of every step are logged at INFO, one line per source, and returned in `Mixture.report`.

The package's modules (import a name from its module; this package imports nothing, so that reading a recipe stays
light):

- `rows`: the row vocabulary every stage shares: `DataError`, `InvalidRowError`, `RowProblem` and its
  `problem_kind`, the chat check `conversation_problem` (tool use included).
- `formats`: the data formats users have and one converter per format to the canonical rows
  (`sharegpt_to_messages`; `chat_tools` reads a `tools` column).
- `conversion`: a source's format resolved (the `format`/`columns_map`/`tags` keys of a list entry, or detection
  from its columns) and its splits converted, as `load_mixture` does before checking them.
- `readers`: opening a source (hub id, local file or folder, saved dataset) through the strict reader, also public
  as `read_rows` for code that wants one local file's rows as dicts.
- `strict_json`: the strict JSON / JSON Lines parse, streaming a JSON array one element at a time in bounded
  memory; a file cut off inside an element is named (file, element, byte) or, with `skip_invalid_rows`, read up to
  the cut.
- `sources`: both `dataset_mixer` forms checked into sources (`parse_mixer`), before anything is read.
- `mixture`: `load_mixture` and what it returns (`Mixture`, `MixtureReport`, `SourceReport`): column checks,
  dropping invalid rows, sampling and mixing.
- `encoding`: checked rows -> token ids through a stage's encoder, refusing or counting rows without an exact mask.
- `pairs`: the preference-pair schema DPO and reward models share (three row forms -> prompt, chosen, rejected).
"""
