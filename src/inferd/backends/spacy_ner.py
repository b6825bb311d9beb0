"""token-classification with a spaCy pipeline's named-entity recogniser (the shipped
``en_core_web_sm``, or any pipeline directory or installed package with an ``ner`` component).

Texts from many requests go through ``nlp.pipe`` together (the batches the encoder engine
cuts); only the components the recogniser needs run. spaCy labels whole tokens, so every
aggregation strategy but ``none`` gives its entities as they are (``none``: each token with its
``B-``/``I-`` tag). spaCy's recogniser decides without a probability: ``score`` is 1.0.

Catalog ``options``: none needed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from inferd.backends.base import EncoderBackend, EncoderInput, Tokenized
from inferd.errors import UnsupportedInput

log = logging.getLogger(__name__)

def pipeline_dir(path: Path) -> Path:
    """A spaCy pipeline's directory: ``path`` itself, or the versioned folder a model package holds."""
    if (path / "config.cfg").is_file():
        return path
    found = sorted(p.parent for p in path.glob("*/config.cfg"))
    if not found:
        raise FileNotFoundError(f"{path} holds no spaCy pipeline (no config.cfg)")
    return found[-1]


class SpacyNERBackend(EncoderBackend):
    normalizes = False
    dimensions = 1
    vocab_size = 0

    def load(self) -> None:
        import spacy

        path = pipeline_dir(self.resolve())
        nlp = spacy.load(path)
        if "ner" not in nlp.pipe_names:
            raise ValueError(f"{self.spec.id}: the spaCy pipeline has no ner component ({', '.join(nlp.pipe_names)})")
        keep = {name for name in nlp.pipe_names if name == "ner" or _is_listened(nlp, name)}
        for name in nlp.pipe_names:
            if name not in keep:
                nlp.disable_pipe(name)
        self.nlp = nlp
        self.labels = list(nlp.get_pipe("ner").labels)
        self.context_length = self.fit_context(nlp.max_length)
        log.info("loaded spaCy NER %s: components %s, %d labels", self.spec.id, ", ".join(nlp.pipe_names),
                 len(self.labels))

    def tokenize(self, inputs: Sequence[EncoderInput]) -> list[Tokenized]:
        out = []
        for text in inputs:
            if not isinstance(text, str):
                raise UnsupportedInput(f"model {self.spec.id} takes text", param="input")
            doc = self.nlp.make_doc(text)
            out.append(Tokenized(doc, len(doc), cost=max(len(doc), 1)))
        return out

    def forward(self, batch: Sequence) -> list:
        rows = []
        for doc in self.nlp.pipe(list(batch), batch_size=max(len(batch), 1)):
            groups = [{"entity_group": ent.label_, "score": 1.0, "word": ent.text, "start": ent.start_char,
                       "end": ent.end_char} for ent in doc.ents]
            tokens = [{"entity": f"{t.ent_iob_}-{t.ent_type_}", "score": 1.0, "index": t.i, "word": t.text,
                       "start": t.idx, "end": t.idx + len(t.text)} for t in doc if t.ent_type_]
            rows.append((groups, tokens))
        return rows

    def entities(self, text: str, row, detail, strategy: str) -> list[dict]:
        groups, tokens = row
        return tokens if strategy == "none" else groups

    def close(self) -> None:
        self.nlp = None


def _is_listened(nlp, name: str) -> bool:
    """Whether the recogniser listens to component ``name`` (a shared tok2vec or transformer)."""
    pipe = nlp.get_pipe(name)
    listeners = getattr(pipe, "listening_components", None) or []
    return "ner" in listeners
