# A small GPT-2-BPE model pretrained on the SMS spam task's training messages (no labels, no
# val or test text), as the starting point for finetune.py on SMS spam: about 6 minutes on 2 CPU cores.
# python train.py config/train_sms_spam_lm.py
# python finetune.py config/finetune_sms_spam.py --init_from=out-sms-spam-lm
# GPT-2's 50,257-token lm_head costs most of each step, so the body is small and the run short.

out_dir = "out-sms-spam-lm"
eval_interval = 50
eval_iters = 8
log_interval = 10
sample_tokens = 0

dataset = "sms_spam_lm"  # data/sms_spam_lm/prepare.py: 84k tokens of SMS text
batch_size = 8
block_size = 128

n_layer = 4
n_head = 4
n_embd = 192
dropout = 0.0

learning_rate = 2e-3
max_iters = 250  # about 3 passes over the corpus
max_seconds = 0  # all max_iters iterations, however long they take (no time budget, unlike the default run)
lr_decay_iters = 250
min_lr = 2e-4
warmup_iters = 25
