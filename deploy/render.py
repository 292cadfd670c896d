"""Render the nginx site template (deploy/nginx/livesite.conf.template) for one deployment; stdlib only.

    python3 deploy/render.py PUBLIC_ORIGIN=https://live.example.org > /etc/nginx/sites-available/livesite.conf

Each `${NAME}` of the template takes NAME=value from the command line, else from the environment, else its
default in VARIABLES. A name the template uses but VARIABLES does not know, or a required one left unset, stops
the rendering with a message: nginx never gets a half-rendered file. nginx's own variables (`$http_host`,
`$request_uri`) have no braces and are left alone, which `envsubst` without a variable list would not do.
"""

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

TEMPLATE = Path(__file__).resolve().parent / "nginx" / "livesite.conf.template"
PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")

# name -> (default, meaning). A default of None means required; "{SERVER_NAME}" refers to that value.
VARIABLES: dict[str, tuple[str | None, str]] = {
    "PUBLIC_ORIGIN": (None, "the site's public address, the app's own PUBLIC_ORIGIN (https://live.example.org)"),
    "SERVER_NAME": ("", "nginx's server_name, PUBLIC_ORIGIN's host unless given"),
    "HTTPS_LISTEN": ("443", "nginx `listen` address of the TLS + HTTP/2 server (443, or 127.0.0.1:8443)"),
    "HTTP_LISTEN": ("80", "nginx `listen` address of the plain-HTTP server that only redirects to HTTPS"),
    "WORKERS": ("127.0.0.1:8101,127.0.0.1:8102", "comma-separated host:port of every worker (livesite@PORT)"),
    "TLS_CERTIFICATE": ("/etc/letsencrypt/live/{SERVER_NAME}/fullchain.pem", "certificate chain (PEM)"),
    "TLS_CERTIFICATE_KEY": ("/etc/letsencrypt/live/{SERVER_NAME}/privkey.pem", "its private key (PEM)"),
    "STATIC_ROOT": ("/srv/livesite/staticfiles", "where `manage.py collectstatic` put the static files"),
}


class RenderError(ValueError):
    """A value is missing or malformed, or the template names an unknown variable."""


def values_from(given: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """Every variable's value: `given` first, then `environ`, then the default; derived ones added."""
    values: dict[str, str] = {}
    for name, (default, meaning) in VARIABLES.items():
        value = given.get(name, environ.get(name, default))
        if value is None:
            raise RenderError(f"{name} is required: {meaning}")
        values[name] = value
    origin = urlsplit(values["PUBLIC_ORIGIN"])
    if origin.scheme != "https" or not origin.hostname or origin.path not in ("", "/"):
        raise RenderError(f"PUBLIC_ORIGIN must be https://host[:port], not {values['PUBLIC_ORIGIN']!r}")
    values["PUBLIC_ORIGIN"] = values["PUBLIC_ORIGIN"].rstrip("/")
    values["SERVER_NAME"] = values["SERVER_NAME"] or origin.hostname
    for name in ("TLS_CERTIFICATE", "TLS_CERTIFICATE_KEY"):
        values[name] = values[name].replace("{SERVER_NAME}", values["SERVER_NAME"])
    values["STATIC_ROOT"] = values["STATIC_ROOT"].rstrip("/")
    workers = [worker.strip() for worker in values["WORKERS"].split(",") if worker.strip()]
    if not workers or not all(re.fullmatch(r"[\w.\-\[\]:]+:\d+", worker) for worker in workers):
        raise RenderError(f"WORKERS must be host:port[,host:port...], not {values['WORKERS']!r}")
    # Derived, never given: one `server` line per worker in the upstream block.
    values["UPSTREAM_SERVERS"] = "\n".join(f"    server {worker};" for worker in workers)
    return values


def render(template: str, values: Mapping[str, str]) -> str:
    """`template` with every `${NAME}` replaced; RenderError names any placeholder without a value."""
    unknown = sorted({name for name in PLACEHOLDER.findall(template) if name not in values})
    if unknown:
        raise RenderError(f"the template uses unknown variables: {', '.join(unknown)}")
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def main(argv: list[str]) -> int:
    if any(arg in ("-h", "--help") for arg in argv):
        lines = [__doc__ or "", "Variables (NAME=value):"]
        for name, (default, meaning) in VARIABLES.items():
            shown = "required" if default is None else default or "see its meaning"
            lines.append(f"  {name:<20} {meaning} (default: {shown})")
        sys.stdout.write("\n".join(lines) + "\n")
        return 0
    template_path, given = TEMPLATE, {}
    for arg in argv:
        name, sep, value = arg.partition("=")
        if not sep:
            template_path = Path(arg)
        elif name in VARIABLES:
            given[name] = value
        else:
            sys.stderr.write(f"render.py: unknown variable {name} (known: {', '.join(VARIABLES)})\n")
            return 2
    try:
        sys.stdout.write(render(template_path.read_text(), values_from(given, os.environ)))
    except RenderError as exc:
        sys.stderr.write(f"render.py: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
