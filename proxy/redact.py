"""Keeping provider secrets out of text the gateway repeats from an upstream.

A provider (or a compromised one) may echo the key it was sent, e.g. "Incorrect API key provided: sk-...".
Upstream error messages reach clients, logs and the dashboard's health view, so each one passes through
`scrub_error` with the credential's secret before anyone sees it: only the last four characters survive,
as everywhere else in ds2api.
"""

from proxy.canonical import GatewayError

MIN_SECRET_LENGTH = 8  # shorter values would match ordinary words; real provider keys are far longer


def scrub(text: str, secret: str) -> str:
    if not text or len(secret) < MIN_SECRET_LENGTH or secret not in text:
        return text
    return text.replace(secret, "****" + secret[-4:])


def scrub_error(err: GatewayError, secret: str) -> GatewayError:
    err.message = scrub(err.message, secret)
    if err.param:
        err.param = scrub(err.param, secret)
    return err
