"""Server-Sent Events: ``data: {json}\\n\\n`` per event, then ``data: [DONE]\\n\\n``.

The first event is awaited before the response starts, so an error that happens before any
output (unknown model, loading, full queue, bad length) gets its proper status code. After
that, an error becomes one error event in the route's dialect, then ``[DONE]``. A client
that disconnects cancels the stream, which aborts the request in the engine.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import anyio
import orjson
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from inferd.api.disconnect import cancellable
from inferd.api.routing import ANTHROPIC, NATIVE, dialect_of
from inferd.errors import EngineError, InferdError

log = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"
_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class SSEResponse(StreamingResponse):
    """Watches for the client going away whatever the server's ASGI version (Starlette only
    notices on the next failed send under ASGI 2.4), cancels the stream at once, and always
    closes the body iterator, so the request is aborted and metered as cancelled right away."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def stream() -> None:
                    try:
                        await self.stream_response(send)
                    except OSError:
                        pass
                    group.cancel_scope.cancel()

                group.start_soon(stream)
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()
        finally:
            await self.body_iterator.aclose()


def _event(payload: dict) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _named_event(payload: dict) -> bytes:
    """Anthropic's framing: the event's type on an ``event:`` line, then its data."""
    return b"event: " + payload["type"].encode() + b"\n" + _event(payload)


def _error_event(request: Request, exc: InferdError) -> bytes:
    if dialect_of(request.scope) == NATIVE:
        return _event({"error": exc.message})
    if dialect_of(request.scope) == ANTHROPIC:
        return _named_event({"type": "error", "error": {"type": exc.kind, "message": exc.message}})
    return _event({"error": {"message": exc.message, "type": exc.kind, "param": exc.param, "code": exc.code}})


async def sse_response(request: Request, events: AsyncIterator[dict]) -> StreamingResponse:
    try:
        first = await cancellable(request, anext(events))
    except StopAsyncIteration:
        first = None
    except BaseException:
        await events.aclose()
        raise

    anthropic = dialect_of(request.scope) == ANTHROPIC
    encode = _named_event if anthropic else _event

    async def body() -> AsyncIterator[bytes]:
        try:
            if first is not None:
                yield encode(first)
                async for payload in events:
                    yield encode(payload)
        except InferdError as exc:
            yield _error_event(request, exc)
        except Exception as exc:  # noqa: BLE001 - the stream has started: report, don't crash
            log.exception("stream failed")
            yield _error_event(request, EngineError(f"generation failed: {type(exc).__name__}"))
        finally:
            await events.aclose()
        if not anthropic:  # Anthropic's stream ends with its message_stop event
            yield DONE

    return SSEResponse(body(), media_type="text/event-stream", headers=_HEADERS)


async def bytes_response(request: Request, chunks: AsyncIterator[bytes], media_type: str) -> StreamingResponse:
    """Stream bytes as they are made (audio); the first chunk is awaited first, so an error before
    any output keeps its status. An error later cuts the stream short (the body cannot change
    its status); a client that leaves stops the work."""
    try:
        first = await cancellable(request, anext(chunks))
    except StopAsyncIteration:
        first = b""
    except BaseException:
        await chunks.aclose()
        raise

    async def body() -> AsyncIterator[bytes]:
        try:
            yield first
            async for chunk in chunks:
                if chunk:
                    yield chunk
        except InferdError as exc:
            log.warning("stream cut short: %s", exc.message)
        except Exception:  # noqa: BLE001 - the stream has started: report, don't crash
            log.exception("stream failed")
        finally:
            await chunks.aclose()

    return SSEResponse(body(), media_type=media_type, headers=_HEADERS)
