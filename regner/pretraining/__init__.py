"""``regner pretrain``: masked-language-model pretraining of the encoder (corpus → MLM trainer)."""
