"""Training and inference, used by the search but not part of it: devices and precision (`compute`), distillation
losses (`losses`), the one training loop every model goes through (`fit`), logits and accuracy (`evaluate`), and the
final fine-tune of a student (`finetune`)."""
