"""Tiny random-weight models for the classic text tasks, built from configs (no hub): BERT heads
with MiniLM's uncased WordPiece tokenizer (or any tokenizer directory given), and a tiny BART for
text2text-generation."""

from __future__ import annotations

from pathlib import Path

NER_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
CLASS_LABELS = ["negative", "neutral", "positive"]

_HEADS = {
    "text-classification": "BertForSequenceClassification",
    "token-classification": "BertForTokenClassification",
    "fill-mask": "BertForMaskedLM",
    "question-answering": "BertForQuestionAnswering",
}


def build_tiny_text_model(task: str, tokenizer_dir: Path, out: Path, seed: int = 0, labels: list[str] | None = None,
                          hidden: int = 32) -> Path:
    """A 2-layer BERT with the head ``task`` needs, random weights, ``tokenizer_dir``'s tokenizer."""
    if (out / "config.json").exists():
        return out
    import torch
    import transformers
    from transformers import AutoTokenizer, BertConfig

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    labels = labels or {"token-classification": NER_LABELS, "question-answering": ["start", "end"]}.get(task, CLASS_LABELS)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=hidden * 2, max_position_embeddings=512, type_vocab_size=2,
        num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={x: i for i, x in enumerate(labels)},
    )
    torch.manual_seed(seed)
    getattr(transformers, _HEADS[task])(config).eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_tiny_seq2seq(tokenizer_dir: Path, out: Path, seed: int = 0, hidden: int = 32) -> Path:
    """A 2+2-layer BART with random weights and ``tokenizer_dir``'s (BERT) tokenizer."""
    if (out / "config.json").exists():
        return out
    import torch
    from transformers import AutoTokenizer, BartConfig, BartForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = BartConfig(
        vocab_size=len(tokenizer), d_model=hidden, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=hidden * 2, decoder_ffn_dim=hidden * 2, max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
        decoder_start_token_id=tokenizer.cls_token_id, forced_eos_token_id=None,
    )
    torch.manual_seed(seed)
    BartForConditionalGeneration(config).eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
