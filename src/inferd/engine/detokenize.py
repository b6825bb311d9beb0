"""Incremental detokenisation with stop strings, with vLLM's semantics.

* Text grows token by token through the tokenizer's own ``DecodeStream`` (special tokens
  skipped), so multi-byte characters split across tokens come out whole.
* A stop string ends the sequence and is cut from the text together with whatever follows
  it; the token that completed it still counts as generated.
* While streaming, the last ``len(longest stop) - 1`` characters are held back, so a stop
  string that spans tokens never reaches the client in pieces.
"""

from __future__ import annotations

from tokenizers.decoders import DecodeStream


class TextStream:
    __slots__ = ("_tokenizer", "_stream", "_stop", "_hold", "text", "_sent", "stopped_by")

    def __init__(self, tokenizer, stop: tuple[str, ...] = (), prompt_ids: list[int] | None = None):
        self._tokenizer = tokenizer  # a `tokenizers.Tokenizer`
        self._stream = DecodeStream(skip_special_tokens=True)
        self._stop = tuple(s for s in stop if s)
        self._hold = max((len(s) for s in self._stop), default=1) - 1
        self.text = ""
        self._sent = 0
        self.stopped_by: str | None = None

    def push(self, token_id: int) -> bool:
        """Add one generated token; True when a stop string has just ended the text."""
        piece = self._stream.step(self._tokenizer, token_id)
        if not piece:
            return False
        before = len(self.text)
        self.text += piece
        if not self._stop:
            return False
        best = None
        for stop in self._stop:
            at = self.text.find(stop, max(0, before - len(stop) + 1))
            if at != -1 and (best is None or at + len(stop) < best[0] + len(best[1])):
                best = (at, stop)
        if best is None:
            return False
        self.text = self.text[: best[0]]
        self.stopped_by = best[1]
        return True

    def take(self, finished: bool) -> str:
        """The text not yet handed out (all of it once finished; minus the hold-back otherwise)."""
        end = len(self.text) if finished else max(self._sent, len(self.text) - self._hold)
        piece = self.text[self._sent:end]
        self._sent = end
        return piece
