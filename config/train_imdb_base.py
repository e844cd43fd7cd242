# The shared base model that every finetuning recipe starts from: a small GPT pretrained on IMDb reviews
# (data/imdb_lm: the unlabelled and training reviews, no val or test text; a BPE of 8,192 tokens learned
# from them; train.py prepares it on first use).
#   nohup python train.py config/train_imdb_base.py > imdb_base.log 2>&1 &   # in the background
#   python train.py --out_dir=out-imdb-base --resume=True                     # after a stop
# Measured on a 2-core Intel Xeon (Sapphire Rapids, native bfloat16), 2026-12-07: val loss 4.2544 after
# 10,000 iterations of 4,096 tokens (41M tokens, 1.8 passes over the corpus), in 2h07m while sharing the
# CPU with other runs (resumed once with --max_seconds=0, so the budget did not cut it); 0.32 s an
# iteration with the machine to itself (docs/results.md). A CPU without bfloat16 runs at about half the
# speed: there the 2-hour budget ends the run early, its learning rate decayed in step with the time
# (common/budget.py).

out_dir = "out-imdb-base"
eval_interval = 500
eval_iters = 20
log_interval = 25

dataset = "imdb_lm"  # data/imdb_lm/prepare.py
batch_size = 16
block_size = 256  # a review averages ~320 tokens: finetuning keeps 256 or reads windows (--truncate)

n_layer = 4
n_head = 4
n_embd = 256
dropout = 0.0  # under two passes over 22.6M tokens: nothing to overfit yet

learning_rate = 1e-3
max_iters = 10000
lr_decay_iters = 10000
max_seconds = 7200  # two hours at most on any CPU; 0 turns the budget off
min_lr = 1e-4
warmup_iters = 200
beta2 = 0.99  # few tokens per iteration: a shorter memory for the second moment
