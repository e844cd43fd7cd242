"""The data/*/prepare.py scripts and the modules they share (data/corpus.py, data/formats.py,
common/sources.py), run offline on the small files in tests/fixtures/data: exact split sizes, lossless
round trips, reproducible seeded splits, CoNLL cut by document, corpora cleaned of line-end and BOM
characters and warned about when too uniform, and one-line errors that say what to do (and, for a
malformed row, where it is). Where $GPT_DATA_DIR or ../shared/data holds the real data sets, they are
checked against the sizes their README documents; elsewhere those tests skip."""

import ast
import subprocess
import sys
import zipfile
from collections import Counter
from pathlib import Path

import pytest

import data.conll2003.prepare as conll2003
import data.shakespeare.prepare as shakespeare
import data.shakespeare_char.prepare as shakespeare_char
import data.sms_spam.prepare as sms_spam
import data.sst2.prepare as sst2
from common import files, sources
from common.cli import UserError
from common.tokenizer import load_tokenizer
from conftest import FIXTURE_DATA, real_data
from data import corpus, formats

REPO = Path(__file__).resolve().parent.parent
CORPUS = FIXTURE_DATA / "tinyshakespeare" / "input.txt"
SMS = FIXTURE_DATA / "sms_spam" / "SMSSpamCollection"
CONLL = FIXTURE_DATA / "conll2003" / "train.txt"


def decoded_splits(out_dir):
    tok = load_tokenizer(files.read_json(out_dir / "meta.json"))
    return [tok.decode(sources.read_tokens(out_dir / f"{split}.bin").tolist()) for split in ("train", "val")]


def read_parts(out_dir, names):
    return {name: files.read_jsonl(out_dir / f"{name}.jsonl") for name in names}


def pairs(rows):
    return sorted((row["label"], row["text"]) for row in rows)


# --- Tiny Shakespeare, characters and BPE ---

def test_char_prepare_vocab_split_and_round_trip(tmp_path):
    text = CORPUS.read_text()
    shakespeare_char.prepare(input_path=CORPUS, out_dir=tmp_path)
    meta = files.read_json(tmp_path / "meta.json")
    assert meta == {"kind": "char", "chars": "".join(sorted(set(text)))}
    n = int(0.9 * len(text))  # the first 90% of the characters are train, the rest val
    assert (len(sources.read_tokens(tmp_path / "train.bin")), len(sources.read_tokens(tmp_path / "val.bin"))) == (
        n, len(text) - n)
    assert decoded_splits(tmp_path) == [text[:n], text[n:]]


def test_bpe_prepare_round_trip(tmp_path, tiny_bpe):
    text = CORPUS.read_text()
    shakespeare.prepare(input_path=CORPUS, out_dir=tmp_path)
    assert files.read_json(tmp_path / "meta.json") == {"kind": "gpt2"}
    n = int(0.9 * len(text))
    assert decoded_splits(tmp_path) == [text[:n], text[n:]]
    assert sources.read_tokens(tmp_path / "train.bin").tolist() == tiny_bpe.encode(text[:n])


@pytest.mark.parametrize("chunk_chars", [1, 7, 300])
def test_bpe_chunked_encoding_equals_whole(chunk_chars, tiny_bpe):
    """Cut badly, "\\n\\n" at a chunk's end would become one token instead of two."""
    text = CORPUS.read_text() + "end\n\nword \n next\n\n\n  x\ny\n"
    assert len(tiny_bpe.encode("\n\n")) == 1  # the trap exists in this BPE, as in GPT-2's
    assert shakespeare.encode_with_progress(tiny_bpe, text, "test", chunk_chars) == tiny_bpe.encode(text)


def test_gpt_data_dir_is_searched_first(tmp_path, monkeypatch):
    (tmp_path / "tinyshakespeare").mkdir()
    (tmp_path / "tinyshakespeare" / "input.txt").write_text("to be or not to be\n")
    monkeypatch.setenv("GPT_DATA_DIR", str(tmp_path))
    shakespeare_char.prepare(out_dir=tmp_path / "out")
    assert files.read_json(tmp_path / "out" / "meta.json")["chars"] == "\n benort"


def test_empty_corpus_is_a_user_error(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(UserError, match="empty"):
        shakespeare_char.prepare(input_path=tmp_path / "empty.txt", out_dir=tmp_path)


# --- cleaning and checking a corpus ---

# Saved on Windows: "\r\n" line ends, a BOM at the start and another where a second file was pasted
# on; one old-Mac "\r" line end. What the model should see: the same text with "\n" and no BOM.
WINDOWS_TEXT = ("\ufeffFirst Citizen:\r\nBefore we proceed any further, hear me speak.\r\n\r\nAll:\r"
                "Speak, speak.\r\n\ufeffSecond Citizen:\r\nWe are accounted poor citizens.\r\n") * 5
CLEAN_TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\n"
              "Speak, speak.\nSecond Citizen:\nWe are accounted poor citizens.\n") * 5


@pytest.mark.parametrize("text, expected", [
    ("a\r\nb\r\n", "a\nb\n"), ("a\rb", "a\nb"), ("a\r\r\nb", "a\n\nb"), ("\ufeffa\ufeffb", "ab"),
    ("a\n\n b\t", "a\n\n b\t"),  # other white space is text, and stays
])
def test_normalise_text(text, expected):
    assert corpus.normalise_text(text) == expected


def test_crlf_and_bom_become_no_characters_of_the_alphabet(tmp_path):
    (tmp_path / "windows.txt").write_bytes(WINDOWS_TEXT.encode("utf-8"))
    shakespeare_char.prepare(input_path=tmp_path / "windows.txt", out_dir=tmp_path)
    assert files.read_json(tmp_path / "meta.json")["chars"] == "".join(sorted(set(CLEAN_TEXT)))
    n = int(0.9 * len(CLEAN_TEXT))
    assert decoded_splits(tmp_path) == [CLEAN_TEXT[:n], CLEAN_TEXT[n:]]


def test_crlf_and_bom_are_not_encoded_by_the_bpe(tmp_path, tiny_bpe):
    (tmp_path / "windows.txt").write_bytes(WINDOWS_TEXT.encode("utf-8"))
    shakespeare.prepare(input_path=tmp_path / "windows.txt", out_dir=tmp_path)
    n = int(0.9 * len(CLEAN_TEXT))
    assert decoded_splits(tmp_path) == [CLEAN_TEXT[:n], CLEAN_TEXT[n:]]


@pytest.mark.parametrize("ids, bits", [([3, 3, 3], 0.0), ([0, 0, 1, 1], 1.0), ([0, 1, 2, 3], 2.0),
                                       ([0, 0, 0, 1], 0.8113)])
def test_bits_per_token_is_the_unigram_entropy(ids, bits):
    assert corpus.bits_per_token(ids) == pytest.approx(bits, abs=1e-4)


@pytest.mark.parametrize("text, warned", [
    ("a" * 1000, True),  # one repeated character: 0 bits
    ("aaaaaaaaab" * 100, True),  # 0.47 bits: the text is still nearly all "a"
    ("ab" * 500, False),  # exactly 1 bit (0.69 nats: a rule in the wrong unit would warn)
    (CORPUS.read_text(), False),  # Shakespeare: about 4.8 bits
])
def test_uniform_corpus_is_written_with_a_warning(text, warned, tmp_path, capsys):
    (tmp_path / "input.txt").write_text(text)
    shakespeare_char.prepare(input_path=tmp_path / "input.txt", out_dir=tmp_path / "out")
    err = capsys.readouterr().err
    assert ("warning:" in err and "one token repeated" in err) == warned, err
    assert (tmp_path / "out" / "train.bin").is_file()  # written all the same


# --- finding sources ---

@pytest.mark.parametrize("prepare", [shakespeare_char.prepare, sms_spam.prepare, conll2003.prepare])
def test_missing_source_offline_names_both_remedies(prepare, tmp_path, no_local_data):
    with pytest.raises(UserError) as e:
        prepare(out_dir=tmp_path / "out")
    message = str(e.value)
    assert "--input=PATH" in message and "GPT_DATA_DIR" in message and "\n" not in message
    assert not list((tmp_path / "out").rglob("*.part"))  # no half-downloaded file left behind


def test_missing_input_path_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        sms_spam.prepare(input_path=tmp_path / "missing.txt", out_dir=tmp_path)


@pytest.mark.parametrize("dataset, given, missing", [
    ("shakespeare_char", "nope.txt", "nope.txt"),
    ("imdb_lm", "nope", "nope/train.tsv"),  # imdb_lm's --input is a folder
])
def test_script_prints_user_error_as_one_line(dataset, given, missing, tmp_path):
    """Also proves that a corpus script, which train.py runs by path, finds the repo's modules (data/
    shakespeare's imports are data/shakespeare_char's; imdb_lm's are its own)."""
    script = REPO / "data" / dataset / "prepare.py"
    result = subprocess.run([sys.executable, script, f"--input={tmp_path}/{given}"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == f"error: --input={tmp_path}/{missing}: no such file\n"


def imported_modules(path):
    """The modules a Python file imports by name: "data.imdb.prepare" for `from data.imdb import prepare`."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def test_no_module_imports_a_prepare_script():
    """A prepare.py is a script: what two of them share lives in a module under data/. The tests
    alone import the scripts, to call them."""
    python_files = [p for p in REPO.rglob("*.py") if not {"tests", ".git"} & set(p.relative_to(REPO).parts)]
    offenders = {str(p.relative_to(REPO)): name for p in python_files for name in imported_modules(p)
                 if name.startswith("data.") and name.endswith(".prepare")}
    assert not offenders


def test_download_takes_the_file_out_of_the_zip(tmp_path, monkeypatch, no_local_data):
    rows = [f"ham\thello {i}" for i in range(14)] + [f"spam\tWIN {i}" for i in range(6)]
    with zipfile.ZipFile(tmp_path / "sms.zip", "w") as z:
        z.writestr("readme", "not this one")
        z.writestr("SMSSpamCollection", "\n".join(rows) + "\n")
    monkeypatch.setattr(sms_spam, "URL", (tmp_path / "sms.zip").as_uri())
    sms_spam.prepare(out_dir=tmp_path / "out")
    parts = read_parts(tmp_path / "out", ["train", "val", "test"])
    assert pairs(r for rows in parts.values() for r in rows) == sorted(tuple(r.split("\t")) for r in rows)
    assert (tmp_path / "out" / "downloads" / "SMSSpamCollection").is_file()


# --- finetuning tasks ---

def test_sms_split_is_stratified_complete_and_reproducible(tmp_path):
    sms_spam.prepare(input_path=SMS, out_dir=tmp_path / "a")
    sms_spam.prepare(input_path=SMS, out_dir=tmp_path / "b")
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "split.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    parts = read_parts(tmp_path / "a", ["train", "val", "test"])
    everything = formats.read_sms_spam(SMS)
    assert Counter(r["label"] for r in everything) == {"ham": 30, "spam": 10}
    assert pairs(everything) == pairs(r for rows in parts.values() for r in rows)  # nothing lost or doubled
    for name, fraction in sms_spam.FRACTIONS.items():
        labels = Counter(r["label"] for r in parts[name])
        assert abs(len(parts[name]) - fraction * 40) <= 1, name
        assert abs(labels["spam"] - len(parts[name]) / 4) <= 1, (name, labels)  # a quarter is spam
    split = files.read_json(tmp_path / "a" / "split.json")
    assert split["seed"] == sms_spam.SEED
    assert split["counts"] == {name: dict(Counter(r["label"] for r in rows)) for name, rows in parts.items()}


def test_sst2_val_holds_whole_sentences_and_train_drops_their_phrases():
    texts = ["a good film", "a fine cast", "a", "good film", "good", "fine cast", "fine"]  # 2 sentences
    examples = [{"text": t, "label": "positive"} for t in texts]
    parts, n_sentences = sst2.split_by_sentence(examples, {"train": 0.5, "val": 0.5}, seed=0)
    assert n_sentences == 2 and len(parts["val"]) == 1
    # train keeps the other sentence and its phrases, "a" (in both) included; the held-out one's go
    expected = {"a good film": ["a fine cast", "a", "fine cast", "fine"],
                "a fine cast": ["a good film", "a", "good film", "good"]}[parts["val"][0]["text"]]
    assert sorted(r["text"] for r in parts["train"]) == sorted(expected)


def test_sst2_parsing_and_held_out_val(tmp_path):
    """The fixture holds 12 sentences (6 of each label), each with a few of its phrases as rows."""
    train = formats.read_sst2(FIXTURE_DATA / "sst2" / "train.tsv")
    assert len(train) == 41
    assert train[0] == {"text": "a warm and funny film about growing up", "label": "positive"}
    sst2.prepare(input_path=FIXTURE_DATA / "sst2", out_dir=tmp_path)
    parts = read_parts(tmp_path, ["train", "val", "dev"])
    assert len(parts["dev"]) == 6
    split = files.read_json(tmp_path / "split.json")
    assert split["sentences in train.tsv"] == 12
    assert Counter(r["label"] for r in parts["val"]) == {"negative": 1, "positive": 1}  # 10% of 6, per label
    # no val sentence was seen in training, not even inside a longer training row
    seen = set().union(*(sst2.word_spans(r["text"]) for r in parts["train"]))
    assert not any(sst2.phrase(r["text"]) in seen for r in parts["val"])
    # and train lost nothing else: a row missing from it is a phrase of a val sentence
    val_spans = set().union(*(sst2.word_spans(r["text"]) for r in parts["val"]))
    dropped = [r for r in train if r not in parts["train"]]
    assert dropped and all(sst2.phrase(r["text"]) in val_spans for r in dropped)
    assert len(parts["train"]) + split["phrases dropped with val's sentences"] == 41


def write_conll(path, sentences):
    """A CoNLL file of sentences written "EU/B-ORG rejects/O" (and "-DOCSTART-/O"), a blank line after each."""
    lines = []
    for sentence in sentences:
        lines += [" ".join(word.rsplit("/", 1)) for word in sentence.split()] + [""]
    path.write_text("\n".join(lines))
    return path


def document_rows(sentences):
    """The rows read_conll2003 makes of sentences written "EU/B-ORG rejects/O"."""
    split_words = [[word.rsplit("/", 1) for word in sentence.split()] for sentence in sentences]
    return [{"tokens": [w for w, _ in words], "tags": [t for _, t in words]} for words in split_words]


# Three Reuters stories as ../shared/data's file has them: no -DOCSTART-; a headline, then a byline, a
# correction note or the place on a line of its own, then the dateline.
STORY_1 = ["EU/B-ORG rejects/O German/B-MISC call/O ./O", "Peter/B-PER Blackburn/I-PER",
           "BRUSSELS/B-LOC 1996-08-22/O", "The/O Commission/B-ORG said/O no/O ./O"]
STORY_2 = ["Kindercare/B-ORG says/O debt/O buy/O to/O hit/O results/O ./O", "[/O CORRECTED/O 18:00/O GMT/O ]/O",
           "MONTGOMERY/B-LOC ,/O Ala/B-LOC ./O", "1996-08-22/O",
           "The/O deal/O was/O signed/O on/O 1996-08-20/O in/O Montgomery/B-LOC ./O",  # a date, but no dateline
           "--/O Chicago/B-LOC Newsroom/O"]
STORY_3 = ["SOCCER/O -/O AJAX/B-ORG WIN/O ./O", "AMSTERDAM/B-LOC 1996-08-24/O", "Ajax/B-ORG beat/O PSV/B-ORG 2-1/O ./O"]


def test_conll_documents_are_found_by_their_datelines(tmp_path):
    path = write_conll(tmp_path / "train.txt", STORY_3 + STORY_1 + STORY_2)
    documents, method = conll2003.find_documents(path)
    assert method == conll2003.BY_DATELINE
    assert documents == [document_rows(STORY_3), document_rows(STORY_1), document_rows(STORY_2)]


def test_conll_docstart_lines_are_honoured_over_datelines(tmp_path):
    path = write_conll(tmp_path / "train.txt", ["-DOCSTART-/O"] + STORY_1 + STORY_2 + ["-DOCSTART-/O"] + STORY_3)
    documents, method = conll2003.find_documents(path)
    assert method == conll2003.BY_DOCSTART
    assert documents == [document_rows(STORY_1 + STORY_2), document_rows(STORY_3)]


def test_conll_split_keeps_each_document_on_one_side(tmp_path):
    """The fixture: 10 documents between -DOCSTART- lines, 29 sentences, each sentence written once."""
    documents = formats.read_conll2003_documents(CONLL)
    assert (len(documents), sum(map(len, documents))) == (10, 29)
    document_of = {tuple(s["tokens"]): i for i, document in enumerate(documents) for s in document}
    assert len(document_of) == 29  # so a sentence tells which document it is from
    conll2003.prepare(input_path=CONLL, out_dir=tmp_path)
    parts = read_parts(tmp_path, ["train", "val", "test"])
    sides = {name: {document_of[tuple(r["tokens"])] for r in rows} for name, rows in parts.items()}
    assert {name: len(ids) for name, ids in sides.items()} == {"train": 8, "val": 1, "test": 1}  # 80/10/10
    assert set().union(*sides.values()) == set(range(10))  # 8 + 1 + 1 distinct: no document on two sides
    for name, ids in sides.items():  # and each part holds its documents whole
        assert sorted(map(str, parts[name])) == sorted(str(s) for i in ids for s in documents[i]), name
    split = files.read_json(tmp_path / "split.json")
    assert split["documents found by"] == conll2003.BY_DOCSTART and split["seed"] == conll2003.SEED
    assert split["counts"] == {name: {"documents": len(sides[name]), "sentences": len(rows),
                                      "tokens": sum(len(r["tokens"]) for r in rows)} for name, rows in parts.items()}


def test_conll_split_is_seeded_and_reproducible(tmp_path, monkeypatch):
    conll2003.prepare(input_path=CONLL, out_dir=tmp_path / "a")
    conll2003.prepare(input_path=CONLL, out_dir=tmp_path / "b")
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "split.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    monkeypatch.setattr(conll2003, "SEED", conll2003.SEED + 1)
    conll2003.prepare(input_path=CONLL, out_dir=tmp_path / "c")
    assert read_parts(tmp_path / "c", ["val", "test"]) != read_parts(tmp_path / "a", ["val", "test"])


def test_conll_too_few_documents_are_refused(tmp_path):
    path = write_conll(tmp_path / "train.txt", ["-DOCSTART-/O"] + STORY_1 + ["-DOCSTART-/O"] + STORY_2
                       + ["-DOCSTART-/O"] + STORY_3)
    with pytest.raises(UserError, match="3 documents are too few to cut into train, val, test"):
        conll2003.prepare(input_path=path, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- the real data sets, where present ---

def test_real_tiny_shakespeare(tmp_path):
    real_data("tinyshakespeare/input.txt")
    shakespeare_char.prepare(out_dir=tmp_path)  # found as a user's run finds it
    assert len(files.read_json(tmp_path / "meta.json")["chars"]) == 65
    assert (len(sources.read_tokens(tmp_path / "train.bin")), len(sources.read_tokens(tmp_path / "val.bin"))) == (
        1_003_854, 111_540)


def test_real_sms_spam_collection():
    (path,) = real_data("sms_spam/SMSSpamCollection")
    assert Counter(r["label"] for r in formats.read_sms_spam(path)) == {"ham": 4827, "spam": 747}


def test_real_sst2():
    train, dev = real_data("sst2/train.tsv", "sst2/dev.tsv")
    rows = formats.read_sst2(train)
    assert len(rows) == 67_349 and len(formats.read_sst2(dev)) == 872
    assert rows[0] == {"text": "hide new secretions from the parental units", "label": "negative"}


def test_real_conll2003():
    (path,) = real_data("conll2003/train.txt")
    sentences = formats.read_conll2003(path)
    assert len(sentences) == 14_041 and sum(len(s["tokens"]) for s in sentences) == 203_621
    assert sentences[0]["tokens"][:3] == ["EU", "rejects", "German"]
    assert sentences[0]["tags"][:3] == ["B-ORG", "O", "B-MISC"]


def test_real_conll2003_documents():
    """No -DOCSTART- in the shared file: 919 of its documents have a dateline (CoNLL-2003's train split
    is documented as 946 documents; the rest stay joined to the one before them)."""
    (path,) = real_data("conll2003/train.txt")
    documents, method = conll2003.find_documents(path)
    assert method == conll2003.BY_DATELINE
    assert len(documents) == 919 and sum(map(len, documents)) == 14_041
    first = [" ".join(s["tokens"]) for s in documents[0][:4]]  # headline, byline, dateline, text
    assert first[:3] == ["EU rejects German call to boycott British lamb .", "Peter Blackburn", "BRUSSELS 1996-08-22"]
    assert documents[0][-1]["tokens"][-3:] == ["overall", "imports", "."]  # its last line, not the next headline
    assert " ".join(documents[1][0]["tokens"]) == "Rare Hendrix song draft sells for almost $ 17,000 ."


def test_conll_docstart_extra_columns_and_no_final_blank_line(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n"
                    "-DOCSTART- -X- -X- O\nPeter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER")
    assert formats.read_conll2003_documents(path) == [
        [{"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]}],
        [{"tokens": ["Peter", "Blackburn"], "tags": ["B-PER", "I-PER"]}],
    ]
    assert formats.read_conll2003(path) == [
        {"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]},
        {"tokens": ["Peter", "Blackburn"], "tags": ["B-PER", "I-PER"]},
    ]


@pytest.mark.parametrize("read, content, line, message", [
    (formats.read_sms_spam, "ham\tok\nspam no tab here\n", 2, "expected label<TAB>text"),
    (formats.read_sms_spam, "ham\tok\nhma\thi\n", 2, "unknown label 'hma'"),
    (formats.read_sms_spam, "ham\tok\n\nspam\t  \n", 3, "empty text"),
    (formats.read_sst2, "text\tlabel\ngood\t1\n", 1, "expected the header"),
    (formats.read_sst2, "sentence\tlabel\ngood\t1\nbad\t2\n", 3, "unknown label '2'"),
    (formats.read_sst2, "sentence\tlabel\ngood\t1\nno tab here\n", 3, "expected sentence<TAB>label, found no tab"),
    (formats.read_sst2, "sentence\tlabel\n\t0\n", 2, "empty text"),
    (formats.read_conll2003, "EU B-ORG\nrejects\n", 2, "expected 'token TAG'"),
    (formats.read_conll2003, "EU B-ORG\n\nGerman B-NAT\n", 3, "unknown tag 'B-NAT'"),
])
def test_malformed_rows_name_file_and_line(read, content, line, message, tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(UserError) as e:
        read(path)
    assert str(e.value).startswith(f"{path}:{line}: {message}")


@pytest.mark.parametrize("read, content", [
    (formats.read_sms_spam, "\n"), (formats.read_sst2, "sentence\tlabel\n"), (formats.read_conll2003, "\n\n"),
    (formats.read_conll2003, "-DOCSTART- O\n\n"),
])
def test_files_without_examples_are_refused(read, content, tmp_path):
    (tmp_path / "none.txt").write_text(content)
    with pytest.raises(UserError, match="no (examples|sentences)"):
        read(tmp_path / "none.txt")
