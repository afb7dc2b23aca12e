"""Training and inference, used by the search but not part of it: devices and precision (`compute`), distillation
losses, the training loop, logits and accuracy (`distill`), and the final fine-tune of a student (`finetune`)."""
