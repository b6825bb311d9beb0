"""The peer for the image benchmark: what a diffusers user gets from a plain endpoint. A FastAPI
app that loads one pipeline and runs each request's call of it in turn (a lock: one pipeline
cannot run two calls at once), answering PNGs as base64.

    python benchmarks/peers/diffusers_endpoint.py PIPELINE_DIR --port 8100
"""

from __future__ import annotations

import argparse
import base64
import io
import threading

import torch
import uvicorn
from diffusers import AutoPipelineForText2Image
from fastapi import FastAPI
from pydantic import BaseModel


class Body(BaseModel):
    prompt: str
    width: int = 512
    height: int = 512
    num_inference_steps: int = 25
    guidance_scale: float = 7.5
    seed: int = 0
    num_images: int = 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("pipeline")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = AutoPipelineForText2Image.from_pretrained(args.pipeline, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    lock = threading.Lock()
    app = FastAPI()

    @app.get("/health")
    def health():
        return {"ok": True}

    @app.post("/generate")
    def generate(body: Body):  # a plain def: FastAPI runs it on its thread pool
        generator = torch.Generator("cpu").manual_seed(body.seed)
        with lock, torch.inference_mode():
            images = pipe(body.prompt, width=body.width, height=body.height, num_inference_steps=body.num_inference_steps,
                          guidance_scale=body.guidance_scale, num_images_per_prompt=body.num_images,
                          generator=generator).images
        out = []
        for image in images:
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            out.append(base64.b64encode(buffer.getvalue()).decode())
        return {"images": out}

    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
