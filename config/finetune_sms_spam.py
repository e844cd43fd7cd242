# Finetune a GPT-2-BPE model on SMS spam: a few minutes on a CPU for a small train.py model.
# python data/sms_spam/prepare.py
# python train.py config/train_sms_spam_lm.py           # about 2.5 minutes on 2 CPU cores
# python finetune.py config/finetune_sms_spam.py         # about 7.5 more (3 members); or --init_from=DIR, a GPT-2-BPE train.py run
# A character-level model (out-shakespeare-char) can't read these texts: they hold digits and symbols.

init_from = "out-sms-spam-lm"  # train.py on the train split's messages (config/train_sms_spam_lm.py)
task = "sms_spam"
out_dir = "out-sms-spam"

head = "attn_pool"  # spam is told by words anywhere in the message; learned weights beat "mean" here
train = "full"
dropout = 0.1  # 3,900 messages are few for 11M weights
members = 3  # three seeds predict together: single models err on 10-16 of the 1,114 test messages

lr = 3e-4  # a small model can take a larger step than GPT-2's usual 2e-5..1e-4
batch_size = 16
epochs = 4  # val peaks by the second epoch; best.pt keeps the best
warmup_iters = 50
max_len = 128  # longer than all but a handful of messages
