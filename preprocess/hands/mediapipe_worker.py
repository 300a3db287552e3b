"""MediaPipe Hands worker: runs inside the MediaPipe venv, reads frames on stdin, writes landmarks on stdout.

Started as `<venv>/bin/python mediapipe_worker.py '<json settings>'`; speaks `wire` messages:
  -> {"op": "detect"} + frames (B, H, W, 3) uint8 RGB   <- {"ok": true} + pixels, world, present, score
  -> {"op": "reset"}  (a new video: forget the tracked hands)          <- {"ok": true}
  -> {"op": "close"}
Outputs are indexed [frame, hand] with hand 0 = left, 1 = right: `pixels` (B, 2, 21, 3) normalised image x, y
and MediaPipe's relative z; `world` (B, 2, 21, 3) metric landmarks; `present` (B, 2); `score` (B, 2).
The legacy Hands solution assumes a selfie (mirrored) view, so each frame is mirrored before detection and
x is mirrored back afterwards (normalised x and world x), which also makes the handedness labels right.
"""

import json
import os
import sys

import numpy as np
import wire  # sibling module; the script's folder is on sys.path


def _detect(hands, frames: np.ndarray):
    n = frames.shape[0]
    pixels = np.zeros((n, 2, 21, 3), np.float32)
    world = np.zeros((n, 2, 21, 3), np.float32)
    present = np.zeros((n, 2), bool)
    score = np.zeros((n, 2), np.float32)
    for i in range(n):
        res = hands.process(np.ascontiguousarray(frames[i, :, ::-1]))
        if not res.multi_hand_landmarks:
            continue
        for lm, wl, cls in zip(res.multi_hand_landmarks, res.multi_hand_world_landmarks, res.multi_handedness):
            c = cls.classification[0]
            h = 1 if c.label == "Right" else 0
            if present[i, h] and score[i, h] >= c.score:  # two detections of one hand: keep the surer
                continue
            p = np.array([[q.x, q.y, q.z] for q in lm.landmark], np.float32)
            w = np.array([[q.x, q.y, q.z] for q in wl.landmark], np.float32)
            p[:, 0] = 1.0 - p[:, 0]
            w[:, 0] = -w[:, 0]
            pixels[i, h], world[i, h], present[i, h], score[i, h] = p, w, True, c.score
    return pixels, world, present, score


def main() -> None:
    settings = json.loads(sys.argv[1])
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything the libraries print goes to stderr, never into the message stream
    inp = sys.stdin.buffer
    import mediapipe as mp

    def make():
        return mp.solutions.hands.Hands(**settings)

    hands = make()
    wire.send(out, {"ok": True, "mediapipe": mp.__version__})
    while True:
        try:
            header, arrays = wire.receive(inp)
        except wire.WireError:
            return
        op = header.get("op")
        try:
            if op == "close":
                return
            if op == "reset":
                hands.close()
                hands = make()
                wire.send(out, {"ok": True})
            elif op == "detect":
                (frames,) = arrays
                if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
                    raise ValueError(f"frames must be (B, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
                wire.send(out, {"ok": True}, *_detect(hands, frames))
            else:
                raise ValueError(f"unknown op {op!r}")
        except (ValueError, RuntimeError) as e:
            wire.send(out, {"ok": False, "error": f"{type(e).__name__}: {e}"})


if __name__ == "__main__":
    main()
