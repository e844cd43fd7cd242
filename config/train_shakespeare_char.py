# A baby GPT on Shakespeare's characters, sized for one GPU: a few minutes on an A100 or H100.
# python train.py config/train_shakespeare_char.py
# On a CPU, shrink it (docs/training.md): --device=cpu --n_layer=4 --n_embd=128 --block_size=64 ...

out_dir = "out-shakespeare-char-gpu"  # its own: the default run (python train.py) is out-shakespeare-char
eval_interval = 250  # evaluate often: this small model overfits
eval_iters = 200
log_interval = 10
always_save_checkpoint = False  # last.pt only when val improves

dataset = "shakespeare_char"
gradient_accumulation_steps = 1
batch_size = 64
block_size = 256  # characters of context

n_layer = 6
n_head = 6
n_embd = 384
dropout = 0.2
bias = False

learning_rate = 1e-3  # a small model can take a large step
max_iters = 5000
max_seconds = 0  # all max_iters iterations, however long they take (no time budget, unlike the default run)
lr_decay_iters = 5000
min_lr = 1e-4
beta2 = 0.99  # few tokens per iteration: a shorter memory for the second moment
warmup_iters = 100

compile = True
