"""Reading the figures back out of a Layer Lab HTML report, for tests: each figure's JSON
payload, and plotly's arrays (plain lists, or typed arrays {dtype, bdata, shape})."""
import base64
import json
import re

import numpy as np

FIGURE = re.compile(r'<script type="application/json" class="figure-data" data-target="fig\d+">(.*?)</script>', re.S)


def figures(page: str) -> list[dict]:
    """The plotly JSON of every figure in an HTML report, in page order."""
    return [json.loads(m.replace("<\\/", "</")) for m in FIGURE.findall(page)]


def array(value) -> np.ndarray:
    """A plotly JSON array as numbers: a list, or a typed array {dtype, bdata (base64), shape}."""
    if isinstance(value, dict):
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")
        return flat.reshape([int(x) for x in str(shape).split(",")]) if shape else flat
    return np.asarray(value, dtype=float)
