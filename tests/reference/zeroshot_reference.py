"""Zero-shot top-1 of a model directory with transformers, on images listed in a JSON file.

Usage: zeroshot_reference.py MODEL_DIR SPEC_JSON -> prints top-1 as a fraction.
SPEC_JSON: {"images": [paths], "labels": [ints], "classnames": [...], "templates": [...]}.
The head is the project's (clip.md §9.1): per class the mean of L2-normalised text features over
the templates, renormalised; logits = cos. Run by tests/demo.rs on an `orchestrate export`."""
import json
import sys

import torch
from PIL import Image
from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizerFast

model_dir, spec_path = sys.argv[1:3]
spec = json.load(open(spec_path))
model = CLIPModel.from_pretrained(model_dir).eval()
tok = CLIPTokenizerFast.from_pretrained(model_dir)
proc = CLIPImageProcessor.from_pretrained(model_dir)
norm = torch.nn.functional.normalize
with torch.no_grad():
    head = []
    for c in spec["classnames"]:
        texts = [t.replace("{c}", c) for t in spec["templates"]]
        f = norm(model.get_text_features(**tok(texts, padding=True, return_tensors="pt")), dim=-1)
        head.append(norm(f.mean(0), dim=0))
    head = torch.stack(head, 1)
    hits = 0
    for i in range(0, len(spec["images"]), 64):
        paths = spec["images"][i:i + 64]
        px = proc([Image.open(p) for p in paths], return_tensors="pt")["pixel_values"]
        pred = (norm(model.get_image_features(pixel_values=px), dim=-1) @ head).argmax(1)
        hits += (pred == torch.tensor(spec["labels"][i:i + 64])).sum().item()
print(hits / len(spec["images"]))
