# Finetune on SST-2 sentiment (GLUE): val is 10% of train's sentences held out whole, dev is the score that counts.
# python data/sst2/prepare.py
# python train.py config/train_sst2_lm.py                # pretrain on SST-2's training phrases
# python finetune.py config/finetune_sst2.py                 # 78.78% dev, about 4.5 minutes on 2 CPU cores
# python finetune.py config/finetune_sst2.py --head=mlp --dropout=0.1 --members=3   # 81.65%, 4 times as long
# (this file stays single-model: it is also the base of tools/bench_finetune.py's SST-2 table)
# python finetune.py config/finetune_sst2.py --init_from=path/to/gpt2 --lr=5e-5   # a GPT-2 Hugging Face folder

init_from = "out-sst2-lm"
task = "sst2"
out_dir = "out-sst2"

head = "mean"
train = "full"
n_embd = 192  # for --init_from=scratch: the same size as out-sst2-lm, for a fair comparison
block_size = 128

lr = 1e-3  # a small model can take a large step; GPT-2 wants 2e-5..1e-4
batch_size = 32
epochs = 1
warmup_iters = 100
max_len = 96  # SST-2 sentences are short
eval_interval = 500  # 67k examples: score val a few times an epoch
log_interval = 100
