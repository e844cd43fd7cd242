# Finetune a GPT-2-BPE model on SMS spam: a few minutes on a CPU for a small train.py model.
# python data/sms_spam/prepare.py
# python finetune.py config/finetune_sms_spam.py --init_from=DIR   # DIR: a train.py run with GPT-2's tokenizer
# A character-level model (out-shakespeare-char) can't read these texts: they hold digits and symbols.

init_from = "out-shakespeare"  # train.py on data/shakespeare (GPT-2 BPE)
task = "sms_spam"
out_dir = "out-sms-spam"

head = "mean"  # spam is told by words anywhere in the message, not only at its end
train = "full"

lr = 3e-4  # a small model can take a larger step than GPT-2's usual 2e-5..1e-4
batch_size = 16
epochs = 6
warmup_iters = 50
max_len = 128  # longer than all but a handful of messages
