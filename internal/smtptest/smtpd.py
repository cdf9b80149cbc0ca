"""A mail hub for alert/mail's tests: aiosmtpd (Debian python3-aiosmtpd) on 127.0.0.1.

Usage: smtpd.py --port P --maildir DIR --mode-file F [--cert C --key K] [--tls starttls|implicit|none]
                [--auth USER:PASS]

Each accepted message is written to DIR/new/ (written in DIR/tmp/, then renamed) before the 250 reply.
The mode file is read at each DATA: "ok" accepts, "refuse" answers 451, "reject" answers 554, "drop"
closes the connection without answering, "hang" waits 30 s and answers 451; each DATA's mode is logged to stderr. Prints READY once it accepts connections; runs until killed.
"""
import argparse
import asyncio
import itertools
import os
import ssl
import sys
import threading
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

counter = itertools.count()


class Handler:
    def __init__(self, maildir, mode_file):
        self.maildir = maildir
        self.mode_file = mode_file

    def mode(self):
        try:
            with open(self.mode_file) as f:
                return f.read().strip() or "ok"
        except FileNotFoundError:
            return "ok"

    async def handle_DATA(self, server, session, envelope):
        mode = self.mode()
        print("DATA " + mode, file=sys.stderr, flush=True)
        if mode == "refuse":
            return "451 4.3.0 test hub refuses for now"
        if mode == "reject":
            return "554 5.0.0 test hub rejects"
        if mode == "drop":
            server.transport.close()
            return "421 4.3.0 closing"  # never reaches the client
        if mode == "hang":  # a sender killed now is killed in the middle of DATA: nothing is accepted
            await asyncio.sleep(30)
            return "451 4.3.0 test hub hung"
        name = "%d.%06d.%d.eml" % (time.time_ns(), next(counter), os.getpid())
        tmp = os.path.join(self.maildir, "tmp", name)
        with open(tmp, "wb") as f:
            f.write(b"X-Envelope-From: " + envelope.mail_from.encode() + b"\r\n")
            f.write(b"X-Envelope-To: " + ",".join(envelope.rcpt_tos).encode() + b"\r\n")
            f.write(b"X-Auth-User: " + str(getattr(session, "auth_data", None) and session.auth_data.login.decode()).encode() + b"\r\n")
            f.write(b"X-TLS: " + str(server.transport.get_extra_info("sslcontext") is not None).encode() + b"\r\n")
            f.write(envelope.original_content)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, os.path.join(self.maildir, "new", name))
        return "250 2.0.0 Ok: queued as " + name


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--maildir", required=True)
    p.add_argument("--mode-file", required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--tls", default="starttls", choices=["starttls", "implicit", "none"])
    p.add_argument("--auth", default="")
    a = p.parse_args()
    for d in ("tmp", "new"):
        os.makedirs(os.path.join(a.maildir, d), exist_ok=True)

    kwargs = {}
    if a.tls != "none":
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(a.cert, a.key)
        if a.tls == "starttls":
            kwargs.update(tls_context=ctx, require_starttls=True)
        else:
            kwargs.update(ssl_context=ctx)
    if a.auth:
        user, password = a.auth.split(":", 1)

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (isinstance(auth_data, LoginPassword)
                  and auth_data.login.decode() == user and auth_data.password.decode() == password)
            return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

        # aiosmtpd sees implicit TLS as no TLS for its auth_require_tls check.
        kwargs.update(authenticator=authenticator, auth_required=True, auth_require_tls=(a.tls == "starttls"))

    ctrl = Controller(Handler(a.maildir, a.mode_file), hostname="127.0.0.1", port=a.port,
                      server_hostname="hub.test", ready_timeout=10, **kwargs)
    ctrl.start()
    print("READY", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    sys.exit(main())
