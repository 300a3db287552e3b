"""Camera-space hands: backends turning a clip's frames into MANO hands in the release's conventions.

`base.HandBackend` is the interface; `mediapipe_backend` runs offline on CPU (MediaPipe in its own venv, PnP,
MANO fit); `precomputed`, `wilor` and `hawor` read results computed elsewhere (`wilor` and `hawor` need the
MANO model for the wrist and joints; `precomputed` needs neither it nor torch). Import submodules by name.
"""
