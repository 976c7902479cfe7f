"""Twilio Media Streams as a second telephony backend (the ``twilio`` extra).

``TwilioBackend(app)`` serves Twilio's webhook and Media Streams socket for a
:class:`~voxtra.VoxtraApp`: each stream becomes a :class:`~voxtra.CallSession` routed
by the app's own routes; ``voxtra serve`` mounts it when ``twilio.account_sid``,
``twilio.auth_token`` and ``twilio.public_url`` are set. See ``docs/twilio.md``.
"""

from voxtra.twilio.backend import TwilioApiError, TwilioBackend, status_outcome
from voxtra.twilio.control import TwilioCallControl, dial_twiml
from voxtra.twilio.no_asterisk import NoAsterisk
from voxtra.twilio.transport import TwilioMediaTransport

__all__ = [
    "NoAsterisk",
    "TwilioApiError",
    "TwilioBackend",
    "TwilioCallControl",
    "TwilioMediaTransport",
    "dial_twiml",
    "status_outcome",
]
