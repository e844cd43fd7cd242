# Named entities in CoNLL-2003 (PER, ORG, LOC, MISC, as IOB2 tags) from the shared base model
# (config/train_imdb_base.py): each word tagged at its first BPE piece, scored by entity F1 beside the
# most frequent tag and a CRF over hand-made features, fitted on the same sentences.
# python data/conll2003/prepare.py && python finetune.py config/finetune_conll2003.py
# Measured on a 2-core Intel Xeon (Sapphire Rapids), one thread, 2026-12-08 (docs/results.md): 1,106 s
# (786 s training); test entity F1 0.7365 (val 0.7475) against the feature CRF's 0.8649 and the most
# frequent tag's 0.5792; the GPT's scores added to the feature CRF's 0.8693.

init_from = "out-imdb-base"
task = "conll2003"
out_dir = "out-conll2003"

head = "token_crf"  # learned tag-to-tag scores: val 0.7475 against 0.7296 for the plain token head (both read twice)
reading = "twice"  # the sentence twice, tagging the second copy: val 0.7475 against 0.6711 left to right, 0.7334 both ways
train = "full"

learning_rate = 1e-3  # a small model can take a large step
batch_size = 16
epochs = 3  # 6 epochs scored lower on val (0.7440)
warmup_iters = 100
max_len = 256  # the longest training sentence is 105 of the base model's tokens: twice that fits
log_interval = 100
