"""
Making a pretraining corpus, the files train.py reads: the text cleaned of invisible characters,
encoded, checked for something to learn, and written as train.bin, val.bin (uint16 token ids) and
meta.json (how to rebuild the tokenizer). The corpus scripts data/shakespeare_char, data/shakespeare
and data/imdb_lm import it; so does any new corpus.

    from data.corpus import normalise_text, write_dataset
    write_dataset(tokenizer, tokenizer.encode(train_text), tokenizer.encode(val_text), out_dir)

Tiny Shakespeare, read and cut in one way for both of its tokenizers, lives here too, so that
data/shakespeare (GPT-2's BPE) trains and validates on exactly data/shakespeare_char's text.
"""

import sys

import numpy as np

from common.cli import UserError
from common.files import read_text, write_json
from common.sources import find_source, make_out_dir, write_tokens

# A model can reach a loss of the corpus's unigram entropy by learning only how often each token
# occurs. Under 1 bit a token, the text is mostly one token repeated (one repeated character is 0
# bits; Tiny Shakespeare's characters are about 4.8, English in GPT-2's tokens about 9): the loss
# falls near 0 and says nothing about the model.
MIN_BITS_PER_TOKEN = 1.0


def normalise_text(text):
    """text with "\\n" for every line end and no byte order mark. A file saved on Windows ends its lines
    with "\\r\\n" (an old Mac file with "\\r"), and a BOM (U+FEFF) is what an editor puts first in a file
    and what pasting files together leaves in the middle: kept, each would become a token of the
    vocabulary that only marks where the text came from. read_text drops a BOM at the start only."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "")


def encode_documents(tokenizer, texts):
    """One token stream: each text's tokens, then <|endoftext|>, so the model learns where a document
    ends and never mistakes the next one for its continuation."""
    ids = []
    for text in texts:
        ids.extend(tokenizer.encode(text))
        ids.append(tokenizer.eot_token)
    return ids


def bits_per_token(ids):
    """The unigram entropy of a token stream, -sum p log2 p over its tokens' frequencies p."""
    counts = np.bincount(np.asarray(ids, dtype=np.int64))
    p = counts[counts > 0] / len(ids)
    return float(-(p * np.log2(p)).sum())


def warn_if_uniform(ids, out_dir):
    """A warning on stderr when a corpus is too uniform to learn from (see MIN_BITS_PER_TOKEN); the
    files are still written, since a test corpus may be uniform on purpose."""
    bits = bits_per_token(ids)
    if bits < MIN_BITS_PER_TOKEN:
        print(f"warning: the training tokens written to {out_dir} carry {bits:.2f} bits each (under "
              f"{MIN_BITS_PER_TOKEN:g}): the text is nearly one token repeated, so a model's loss will fall "
              f"near 0 without learning anything; check the corpus", file=sys.stderr)


def write_dataset(tokenizer, train_ids, val_ids, out_dir):
    """train.bin goes last: train.py prepares the data when train.bin is missing, so its presence
    means the other files are complete too."""
    make_out_dir(out_dir)
    warn_if_uniform(train_ids, out_dir)
    write_json(tokenizer.meta, out_dir / "meta.json")
    write_tokens(val_ids, out_dir / "val.bin")
    write_tokens(train_ids, out_dir / "train.bin")
    print(f"vocab_size {tokenizer.vocab_size:,}; train {len(train_ids):,} tokens, "
          f"val {len(val_ids):,} tokens; written to {out_dir}")


# ----------------------------------------------------------------------------- Tiny Shakespeare

SHAKESPEARE_RELPATH = "tinyshakespeare/input.txt"
SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TRAIN_FRACTION = 0.9  # of the characters; the rest is val


def read_shakespeare(input_path, download_dir):
    """Tiny Shakespeare's text, normalised (normalise_text): --input=PATH, a local copy, or a download."""
    path = find_source(SHAKESPEARE_RELPATH, SHAKESPEARE_URL, download_dir, input_path)
    text = normalise_text(read_text(path))
    if not text:
        raise UserError(f"{path} is empty: there is nothing to train on")
    print(f"{path}: {len(text):,} characters")
    return text


def split_corpus(text):
    """The first TRAIN_FRACTION of the text for training, the rest for val. A cut rather than a
    shuffle: validation text comes from later plays, not from between training lines it would share
    whole sentences with."""
    n = int(len(text) * TRAIN_FRACTION)
    if n == 0 or n == len(text):
        raise UserError(f"a corpus of {len(text)} characters is too short to split into train and val")
    return text[:n], text[n:]
