"""Batch prediction, streamed: notes from a folder/JSONL/CSV/Parquet -> predictions + audit log + summary.

What ``scripts/predict.py`` calls. Guarantees, and why each exists:

* **Nothing is loaded or written before every setting is checked** (``medcoder.workflows.predict``
  and :func:`check_paths`): sizes, formats, and the output paths. An output (predictions, audit log,
  summary) may not resolve (following symlinks) to the input file, into the input folder, to a
  note file read, to the bundle directory or into it, to another output, or to an existing
  folder: any of these used to overwrite the notes or the model, or fail after predicting. Nor
  may it lie inside an MLflow artifact store, any bundle or MLflow model, or the bundle cache, and
  an existing file is replaced only if medcoder wrote it (:mod:`~medcoder.inference.batch.protect`).
* **No input value in any error** (note text is PHI): errors name the file, line/row, column and
  the expected columns, never a cell or a header cell (a headerless CSV's first row is a note);
  the id column may not be the text column.
* **The input is checked whole before the bundle loads, without holding it** (:meth:`NoteSource.scan`):
  one streaming pass parses every note, refuses duplicate ids and counts the notes (the progress
  bar's total), so bad input is still one line and exit 2 with nothing written, as when the input
  was read into memory. Then the notes are read again, lazily, ``block_size`` at a time.
  Bounded: a note longer than ``max_note_chars`` (:data:`DEFAULT_MAX_NOTE_CHARS`) is cut to it and
  flagged ``truncated`` (its codes go to review with ``truncated_note``); ``.txt`` files are never
  read past the limit, and a JSONL line / CSV row too large to parse is a ``DataError``.
* **Memory does not grow with the input.** Per note, only the scan keeps something: a 64-bit hash
  of each id for the duplicate check (8 bytes a note, freed before the bundle loads; ids that
  collide are re-checked exactly in a second pass). A ``.txt`` folder's sorted file names are kept
  (they are the reading order). While predicting, at most one block of notes, predictions and
  output rows is alive; resuming skips notes by count and holds no set of ids (see below).
  Parquet input is read with ``ParquetFile.iter_batches(block_size)``: memory is bounded by one
  batch of the id and text columns (a text is cut to the limit in Arrow, before Python sees it).
* **Resumable** (``resume=True``, the script's default): a run writes into a hidden folder beside
  the output, ``.<output name>.medcoder-partial/`` (:mod:`~medcoder.inference.batch.partial`): ``predictions.part``
  (JSONL/CSV, appended) or ``blocks/<first note>.parquet`` (Parquet: one file per block, a Parquet
  file being unreadable until its footer is written), ``audit.part`` (appended), ``lock`` (an
  exclusive ``flock`` while a run writes) and ``state.json``. After every block the parts are
  flushed and fsynced, then ``state.json`` is replaced atomically with the number of notes done,
  the last id, the byte length of each part, the summary counters, and the fingerprints of the
  bundle (its id), the input (sha256 of the file; for a folder, of its file names and each
  note's sha256: an edit that keeps size and mtime is still a change), the settings that shape the output, the output paths and medcoder's version. A killed
  run (SIGKILL, power loss) is continued by the same command: the parts are cut back to the
  lengths ``state.json`` records (this drops a half-written last line and any block not yet
  recorded: those notes are predicted again), the first ``notes_done`` notes are skipped (the
  input is the same, by its fingerprint, so the same notes come first; the last one's id is
  checked too), and the run goes on. A partial whose fingerprints differ is refused
  (``ConfigError``: delete it or choose another output), never mixed in; so is one another run is
  writing (the lock). Ctrl-C, SIGTERM/SIGHUP and errors keep the partial as well when it holds at
  least one block (not an input that changed meanwhile: that partial could never be resumed).
  ``resume=False`` (the library default) starts over, removing any partial, and removes its own
  on every failure. The partial's files are JSON, JSONL, CSV and Parquet like the outputs: a
  killed run's ``predictions.part`` can be read as it is (up to its last complete line).
  ``batch_size``/``block_size`` are speed and memory settings and may change between runs.
* **All-or-nothing outputs**: at the end the parts are hard-linked (or copied, across file
  systems) to temp files beside each output (``.<name>.medcoder-<pid>-<random>.tmp``), Parquet
  blocks are merged into one file (one row group per block), and the three files are renamed
  together, the summary last (:class:`medcoder.atomic.AtomicFileSet`). **The summary is the
  completion marker: a predictions file without its summary is not complete.** A failed rename
  rolls back what this run renamed and leaves the partial as it was. Temps are deleted on every
  exit path; temps of a killed (SIGKILL) run are deleted by the next run that writes the same
  outputs, if their pid is no longer alive. Before the rename the input's fingerprint is computed
  again: an input changed while it was read is an error, not a silently mixed output.
* **CSV output is safe to open in a spreadsheet**: a cell that starts with ``=``, ``+``, ``-``,
  ``@``, tab or carriage return gets a leading ``'`` (OWASP's rule against formula injection:
  ``=HYPERLINK(...)`` as a note id would otherwise run as a formula). JSONL output is unchanged.
  **Parquet output** has real nested types: ``codes`` is ``list<struct<code, description,
  probability, decision, reasons: list<string>, evidence: list<struct<start, end, weight, source,
  negated>>, sources: list<string>>>`` (:func:`parquet_schema`).
* The summary is valid JSON: shares that are undefined (no codes) are ``null``, never ``NaN``.

One module per job: :mod:`~medcoder.inference.batch.sources` (the input readers),
:mod:`~medcoder.inference.batch.outputs` (output paths and their checks, rows, writers, the
commit), :mod:`~medcoder.inference.batch.partial` (the resumable partial run: state, fingerprint,
lock), :mod:`~medcoder.inference.batch.run` (the predict loop), and
:mod:`~medcoder.inference.batch.spark` (Spark's reading, writing and commit, for
``scripts/spark_predict.py``; pyspark is imported only there, inside its functions).
"""

from medcoder.inference.batch.outputs import (
    CSV_FORMULA_PREFIXES,
    EVIDENCE_KEYS,
    GRANULARITIES,
    OUTPUT_FORMATS,
    PARTIAL_SUFFIX,
    REMOTE_BUNDLE_PREFIXES,
    BatchSummary,
    OutputPaths,
    check_outputs,
    check_paths,
    commit_outputs,
    output_columns,
    parquet_schema,
)
from medcoder.inference.batch.partial import STATE_VERSION
from medcoder.inference.batch.run import predict_file, predict_notes
from medcoder.inference.batch.sources import (
    INPUT_SUFFIXES,
    NoteSource,
    check_bool,
    check_positive,
    iter_notes,
    read_notes,
)

__all__ = [
    "CSV_FORMULA_PREFIXES",
    "EVIDENCE_KEYS",
    "GRANULARITIES",
    "INPUT_SUFFIXES",
    "OUTPUT_FORMATS",
    "PARTIAL_SUFFIX",
    "REMOTE_BUNDLE_PREFIXES",
    "STATE_VERSION",
    "BatchSummary",
    "NoteSource",
    "OutputPaths",
    "check_bool",
    "check_outputs",
    "check_paths",
    "check_positive",
    "commit_outputs",
    "iter_notes",
    "output_columns",
    "parquet_schema",
    "predict_file",
    "predict_notes",
    "read_notes",
]
