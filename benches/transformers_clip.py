"""transformers' CLIPModel throughput on the same model and batch as benches/clip.rs.

Usage: transformers_clip.py MODEL_DIR THREADS BATCH BATCHES -> prints images/s."""
import sys
import time

import torch
from transformers import CLIPModel

model_dir, threads, batch, batches = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
model = CLIPModel.from_pretrained(model_dir).eval()
torch.manual_seed(0)
pixels = torch.randn(batch, 3, 224, 224)
head = torch.nn.functional.normalize(torch.randn(model.config.projection_dim, 10), dim=0)
with torch.no_grad():
    model.get_image_features(pixel_values=pixels)  # warm-up
    start = time.perf_counter()
    for _ in range(batches):
        f = model.get_image_features(pixel_values=pixels)
        logits = 100 * torch.nn.functional.normalize(f, dim=-1) @ head
    elapsed = time.perf_counter() - start
print(batch * batches / elapsed)
