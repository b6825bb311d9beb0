"""token-classification and text-classification with an ONNX model through onnxruntime (the
shipped DistilBERT edit tagger, or any encoder exported with a token or sequence classification
head), tokenised by the folder's ``tokenizer.json`` with character offsets.

Catalog ``source``: a folder with the model (``*.onnx``), ``tokenizer.json`` and the labels:
``config.json``'s ``id2label``, or a JSON list (or ``{"tags": [...]}``/``{"labels": [...]}``) in
the file ``options.labels`` names. ``options``: ``file`` (the model's file when the folder holds
several), ``labels``, ``context_length`` (default 512).
The model's inputs are fed by name: ``input_ids``, ``attention_mask`` and, when it asks for
them, ``token_type_ids``; its first output is the logits.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from inferd.backends.base import padded
from inferd.backends.text_tasks import TextTaskBackend
from inferd.catalog import Task

log = logging.getLogger(__name__)


def read_labels(folder: Path, name: str | None) -> list[str]:
    if name:
        data = json.loads((folder / name).read_text())
        if isinstance(data, dict):
            data = data.get("tags") or data.get("labels") or data.get("id2label")
        if isinstance(data, dict):
            return [str(data[k]) for k in sorted(data, key=int)]
        if isinstance(data, list) and data:
            return [str(x) for x in data]
        raise ValueError(f"{folder / name}: expected a list of labels")
    config = folder / "config.json"
    if config.is_file():
        id2label = json.loads(config.read_text()).get("id2label") or {}
        if id2label:
            return [str(id2label[k]) for k in sorted(id2label, key=int)]
    raise ValueError(f"{folder}: no labels (config.json id2label, or options.labels naming a JSON file)")


class OnnxTextBackend(TextTaskBackend):
    tasks = frozenset({Task.TOKEN_CLASSIFICATION, Task.TEXT_CLASSIFICATION})
    workers = 1  # onnxruntime runs one batch on every core faster than two batches on one core each

    def load(self) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.check_task()
        folder = self.resolve()
        files = [folder / self.options["file"]] if self.options.get("file") else sorted(folder.glob("*.onnx"))
        if len(files) != 1 or not files[0].is_file():
            raise ValueError(f"{folder}: name the model with options.file ({len(files)} .onnx files found)")
        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        # idle pool threads sleep instead of spinning: in a server the cores they would burn run the
        # event loop, the tokenizer and other models
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(files[0]), options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self.session.get_inputs()}
        missing = {"input_ids", "attention_mask"} - self._inputs
        if missing:
            raise ValueError(f"{files[0].name}: the model takes no {', '.join(sorted(missing))}")
        self.setup_tokenizer(Tokenizer.from_file(str(folder / "tokenizer.json")))
        self.labels = read_labels(folder, self.options.get("labels"))
        self.dimensions = len(self.labels)
        self.context_length = self.fit_context(int(self.options.get("context_length", 512)))
        self._pad_id = self.rust.token_to_id("[PAD]") or self.rust.token_to_id("<pad>") or 0
        log.info("loaded ONNX %s model %s: %d labels, context %d tokens", self.task.value, self.spec.id,
                 len(self.labels), self.context_length)

    def forward(self, batch: Sequence[Sequence[int]]) -> list:
        input_ids, mask = padded(batch, self._pad_id)
        feed = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(input_ids)
        logits = self.session.run(None, feed)[0]
        if logits.shape[-1] != len(self.labels):
            raise ValueError(f"the model gives {logits.shape[-1]} scores a token; there are {len(self.labels)} labels")
        return self.rows(logits.astype(np.float32), batch)

    def close(self) -> None:
        self.session = None
