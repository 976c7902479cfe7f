"""A phone assistant on embedded providers: no API keys, no downloads.

Every call, to any extension, is answered by a voice agent that hears the caller
(WebRTC VAD + pocketsphinx in keyword mode), decides what to say (the rule agent:
opening hours, weather through a ``get_weather`` tool, a long story you can interrupt,
goodbye) and speaks (espeak-ng). The conversation is logged: who said what, and each
turn's latency from the end of the caller's speech to the first audio of the answer.

Run it against the sandbox (``python -m voxtra.testing.asterisk up``) or any Asterisk
whose ARI settings are in the environment::

    VOXTRA_ARI_URL=http://127.0.0.1:8088 VOXTRA_USERNAME=voxtra VOXTRA_PASSWORD=voxtra \\
        python examples/assistant.py

then call any extension, e.g. ``python -m voxtra.testing.sipcaller dial 100 ...`` or a
softphone. ``voxtra demo`` does all of this, including the call, in one command.

The whole application is :func:`voxtra.demo.build_assistant`; read it to see how
the pieces fit (about 40 lines).
"""

from __future__ import annotations

import logging

from voxtra.demo import build_assistant

# The ARI connection comes from VOXTRA_ARI_URL / VOXTRA_USERNAME / VOXTRA_PASSWORD /
# VOXTRA_APP_NAME, defaulting to the sandbox (http://127.0.0.1:8088, voxtra/voxtra).
app = build_assistant()

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    app.run()
