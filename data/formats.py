"""
Each finetuning task's labels and the reader of its raw format, in one module that the task's
data/<task>/prepare.py and finetuning/tasks.py both import (a script is run, never imported).

    from data.formats import read_sms_spam
    rows = read_sms_spam("SMSSpamCollection")   # [{"text": ..., "label": "ham" or "spam"}, ...]

Every reader returns the task's rows: {"text", "label"} for a classification task, {"tokens", "tags"}
for tagging. A malformed line is a UserError that names the file and line, so a bad --eval_file in
a data set's own format is one line too.
"""

from common.cli import UserError
from common.files import numbered_lines

# ----------------------------------------------------------------------------- SMS Spam Collection

SMS_SPAM_LABELS = ("ham", "spam")


def read_sms_spam(path):
    """[{"text": ..., "label": ...}] from a `label<TAB>text` file with no header (UCI's format). The
    text is everything after the first tab, as it is."""
    examples = []
    for lineno, line in numbered_lines(path):
        if not line:
            continue
        label, tab, text = line.partition("\t")
        if not tab:
            raise UserError(f"{path}:{lineno}: expected label<TAB>text, found no tab")
        if label not in SMS_SPAM_LABELS:
            raise UserError(f"{path}:{lineno}: unknown label {label!r}; expected one of {', '.join(SMS_SPAM_LABELS)}")
        if not text.strip():
            raise UserError(f"{path}:{lineno}: empty text")
        examples.append({"text": text, "label": label})
    if not examples:
        raise UserError(f"{path}: no examples")
    return examples


# ----------------------------------------------------------------------------- GLUE SST-2

SST2_HEADER = "sentence\tlabel"
SST2_LABEL_NAMES = {"0": "negative", "1": "positive"}  # GLUE's label column -> our label
SST2_LABELS = tuple(SST2_LABEL_NAMES.values())


def read_sst2(path):
    """[{"text": ..., "label": ...}] from a GLUE SST-2 .tsv file: `sentence<TAB>label` under that header,
    label 0 or 1."""
    lines = numbered_lines(path)
    _, header = next(lines)
    if header != SST2_HEADER:
        raise UserError(f"{path}:1: expected the header sentence<TAB>label, found {header[:80]!r}")
    examples = []
    for lineno, line in lines:
        if not line:
            continue
        columns = line.split("\t")
        if len(columns) != 2:
            raise UserError(f"{path}:{lineno}: expected sentence<TAB>label, "
                            f"found {len(columns)} column(s)")
        sentence, label = columns
        if label not in SST2_LABEL_NAMES:
            raise UserError(f"{path}:{lineno}: unknown label {label!r}; expected 0 (negative) "
                            f"or 1 (positive)")
        if not sentence.strip():
            raise UserError(f"{path}:{lineno}: empty text")
        examples.append({"text": sentence, "label": SST2_LABEL_NAMES[label]})
    if not examples:
        raise UserError(f"{path}: no examples")
    return examples


# ----------------------------------------------------------------------------- IMDb reviews

IMDB_HEADER = "text\tlabel"
IMDB_LABEL_NAMES = {"0": "negative", "1": "positive"}  # the label column -> our label
IMDB_LABELS = tuple(IMDB_LABEL_NAMES.values())


def read_imdb(path):
    """[{"text": ..., "label": ...}] from a `text<TAB>label` file with that header (0 negative, 1
    positive), the layout of ../shared/data/imdb. The label is after the last tab: a review may hold
    tabs and quotes."""
    lines = numbered_lines(path)
    _, header = next(lines)
    if header != IMDB_HEADER:
        raise UserError(f"{path}:1: expected the header text<TAB>label, found {header[:80]!r}")
    examples = []
    for lineno, line in lines:
        if not line:
            continue
        text, tab, label = line.rpartition("\t")
        if not tab:
            raise UserError(f"{path}:{lineno}: expected text<TAB>label, found no tab")
        if label not in IMDB_LABEL_NAMES:
            raise UserError(f"{path}:{lineno}: unknown label {label!r}; expected 0 (negative) or 1 (positive)")
        if not text.strip():
            raise UserError(f"{path}:{lineno}: empty text")
        examples.append({"text": text, "label": IMDB_LABEL_NAMES[label]})
    if not examples:
        raise UserError(f"{path}: no examples")
    return examples


def read_imdb_unlabelled(path):
    """The reviews of unsup.txt, one a line; blank lines are skipped."""
    return [line for _, line in numbered_lines(path) if line.strip()]


# ----------------------------------------------------------------------------- CoNLL-2003

CONLL2003_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
DOCSTART = "-DOCSTART-"


def read_conll2003_documents(path):
    """The sentences of a CoNLL file, [{"tokens": [...], "tags": [...]}], grouped into documents:
    a list of documents, each a list of sentences. One `token TAG` a line (middle columns, such as the
    original POS and chunk tags, are ignored), a blank line between sentences, and a -DOCSTART- line
    before each document. A file without -DOCSTART- lines is one document."""
    documents, sentences, tokens, tags = [], [], [], []
    for lineno, line in numbered_lines(path):
        columns = line.split()
        if not columns or columns[0] == DOCSTART:
            if tokens:  # a blank line or -DOCSTART- ends the sentence
                sentences.append({"tokens": tokens, "tags": tags})
                tokens, tags = [], []
            if columns and sentences:  # and -DOCSTART- ends the document
                documents.append(sentences)
                sentences = []
            continue
        if len(columns) < 2:
            raise UserError(f"{path}:{lineno}: expected 'token TAG', found one column {line.strip()!r}")
        if columns[-1] not in CONLL2003_LABELS:
            raise UserError(f"{path}:{lineno}: unknown tag {columns[-1]!r}; "
                            f"expected one of {', '.join(CONLL2003_LABELS)}")
        tokens.append(columns[0])
        tags.append(columns[-1])
    if tokens:  # the last sentence, in a file that doesn't end with a blank line
        sentences.append({"tokens": tokens, "tags": tags})
    if sentences:
        documents.append(sentences)
    if not documents:
        raise UserError(f"{path}: no sentences")
    return documents


def read_conll2003(path):
    """[{"tokens": [...], "tags": [...]}], one per sentence of a CoNLL file, in the file's order."""
    return [sentence for document in read_conll2003_documents(path) for sentence in document]
