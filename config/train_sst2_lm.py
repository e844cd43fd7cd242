# A small GPT-2-BPE model pretrained on SST-2's training phrases (text only, no labels; GLUE dev
# stays unseen), the starting point for finetune.py on SST-2 and for tools/bench_finetune.py's table.
# python train.py config/train_sst2_lm.py
# python finetune.py config/finetune_sst2.py
# GPT-2's 50,257-token lm_head costs most of each step, so the body is small and the run short.

out_dir = "out-sst2-lm"
eval_interval = 100
eval_iters = 8
log_interval = 20
sample_tokens = 0

dataset = "sst2_lm"  # data/sst2_lm/prepare.py
batch_size = 8
block_size = 128

n_layer = 4
n_head = 4
n_embd = 192
dropout = 0.0

learning_rate = 2e-3
max_iters = 400
max_seconds = 0  # all max_iters iterations, however long they take (no time budget, unlike the default run)
lr_decay_iters = 400
min_lr = 2e-4
warmup_iters = 40
