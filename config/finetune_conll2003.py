# Named-entity tagging on CoNLL-2003: one IOB2 tag per word, read from the word's first BPE piece.
# python data/conll2003/prepare.py
# python train.py config/train_sst2_lm.py           # any GPT-2-BPE train.py run will do; this one reads English
# python finetune.py config/finetune_conll2003.py
# python finetune.py --out_dir=out-conll2003 --eval_file=path/to/test.txt   # CoNLL's own format
# metrics.json holds entity F1 beside the most-frequent-tag baseline's (val_baseline).

init_from = "out-sst2-lm"
task = "conll2003"
out_dir = "out-conll2003"

head = "token"
train = "full"

learning_rate = 1e-3  # a small model can take a large step
batch_size = 16
epochs = 3
warmup_iters = 100
max_len = 128  # about the longest sentence in BPE pieces
log_interval = 100
