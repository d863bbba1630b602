"""Image↔text recall@k computed with transformers on a Karpathy-split retrieval set.

Usage: retrieval_reference.py MODEL_DIR DATASET_JSON IMAGE_DIR SPLIT -> prints a JSON object
with image_to_text_r{1,5,10} and text_to_image_r{1,5,10}.
Run by tests/retrieval.rs; the model directory is one `orchestrate init-model` wrote, so this
also checks that transformers loads it."""
import json
import os
import sys

import torch
from PIL import Image
from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizerFast

model_dir, annotations, image_dir, split = sys.argv[1:5]
model = CLIPModel.from_pretrained(model_dir).eval()
tok = CLIPTokenizerFast.from_pretrained(model_dir)
proc = CLIPImageProcessor.from_pretrained(model_dir)
images = [i for i in json.load(open(annotations))["images"]
          if (i["split"] if i["split"] != "restval" else "train") == split]
texts, owner = [], []
for n, img in enumerate(images):
    for s in img["sentences"]:
        texts.append(s["raw"])
        owner.append(n)
with torch.no_grad():
    pixels = proc([Image.open(os.path.join(image_dir, i["filename"])) for i in images],
                  return_tensors="pt")["pixel_values"]
    f_img = torch.nn.functional.normalize(model.get_image_features(pixel_values=pixels), dim=-1)
    batch = tok(texts, padding=True, return_tensors="pt")
    f_txt = torch.nn.functional.normalize(model.get_text_features(**batch), dim=-1)
sim = f_img @ f_txt.T
owner = torch.tensor(owner)
out = {}
for k in (1, 5, 10):
    top = sim.topk(min(k, sim.shape[1]), dim=1).indices
    out[f"image_to_text_r{k}"] = (owner[top] == torch.arange(len(images))[:, None]).any(1).double().mean().item()
    top = sim.T.topk(min(k, sim.shape[0]), dim=1).indices
    out[f"text_to_image_r{k}"] = (top == owner[:, None]).any(1).double().mean().item()
print(json.dumps(out))
