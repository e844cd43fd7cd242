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
    return read_tab_separated(path, numbered_lines(path), "label<TAB>text", {label: label for label in SMS_SPAM_LABELS})


def read_tab_separated(path, lines, layout, label_names):
    """The {"text", "label"} rows of lines ((line number, line) pairs) that each hold a text and its
    label apart by one tab, in the order layout names them ("label<TAB>text" cuts at the first tab, as
    the text comes after it; "...<TAB>label" at the last, as a review's text may hold a tab). label_names
    maps the file's labels to ours. A malformed line is a UserError naming the file and line."""
    examples = []
    for lineno, line in lines:
        if not line:
            continue
        if layout.startswith("label"):
            label, tab, text = line.partition("\t")
        else:
            text, tab, label = line.rpartition("\t")
        if not tab:
            raise UserError(f"{path}:{lineno}: expected {layout}, found no tab")
        if label not in label_names:
            expected = ", ".join(f"{name} ({ours})" if name != ours else name for name, ours in label_names.items())
            raise UserError(f"{path}:{lineno}: unknown label {label!r}; expected one of {expected}")
        if not text.strip():
            raise UserError(f"{path}:{lineno}: empty text")
        examples.append({"text": text, "label": label_names[label]})
    if not examples:
        raise UserError(f"{path}: no examples")
    return examples


def headed_lines(path, header, layout):
    """The numbered lines of a .tsv file after its header line, which must be header."""
    lines = numbered_lines(path)
    _, first = next(lines)
    if first != header:
        raise UserError(f"{path}:1: expected the header {layout}, found {first[:80]!r}")
    return lines


# ----------------------------------------------------------------------------- GLUE SST-2

SST2_HEADER = "sentence\tlabel"
SST2_LABEL_NAMES = {"0": "negative", "1": "positive"}  # GLUE's label column -> our label
SST2_LABELS = tuple(SST2_LABEL_NAMES.values())


def read_sst2(path):
    """[{"text": ..., "label": ...}] from a GLUE SST-2 .tsv file: `sentence<TAB>label` under that header,
    label 0 or 1."""
    layout = "sentence<TAB>label"
    return read_tab_separated(path, headed_lines(path, SST2_HEADER, layout), layout, SST2_LABEL_NAMES)


# ----------------------------------------------------------------------------- IMDb reviews

IMDB_HEADER = "text\tlabel"
IMDB_LABEL_NAMES = {"0": "negative", "1": "positive"}  # the label column -> our label
IMDB_LABELS = tuple(IMDB_LABEL_NAMES.values())


def read_imdb(path):
    """[{"text": ..., "label": ...}] from a `text<TAB>label` file with that header (0 negative, 1
    positive), the layout of ../shared/data/imdb. The label is after the last tab: a review may hold
    tabs and quotes."""
    layout = "text<TAB>label"
    return read_tab_separated(path, headed_lines(path, IMDB_HEADER, layout), layout, IMDB_LABEL_NAMES)


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
