"""A real SMTP server for lake's alert tests: aiosmtpd on a loopback port.

Usage: smtpd.py PORT MAILDIR MODE [USER PASSWORD CERT KEY]
  MODE plain     no TLS, no auth
  MODE starttls  STARTTLS required, then AUTH required (CERT, KEY)
  MODE tls       implicit TLS (SMTPS), AUTH required (CERT, KEY)

Every message accepted is written to MAILDIR as <n>.eml (the raw message) and <n>.json
(envelope, decoded subject and body, whether the session was TLS and who logged in).
Prints "ready" once listening; runs until killed. Exits 3 when aiosmtpd is missing.
"""
import email
import email.policy
import json
import os
import ssl
import sys
import time

try:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword
except ImportError as e:
    print(f"aiosmtpd is not installed: {e} (scripts/setup peers installs it)", file=sys.stderr)
    sys.exit(3)


class Save:
    def __init__(self, out):
        self.out = out
        self.n = 0

    async def handle_DATA(self, server, session, envelope):
        self.n += 1
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        ssl_object = server.transport.get_extra_info("ssl_object") if server.transport else None
        login = session.login_data.decode() if isinstance(session.login_data, bytes) else session.login_data
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "subject": str(msg["subject"]),
            "from": str(msg["from"]),
            "to": str(msg["to"]),
            "content_type": msg.get_content_type(),
            "body": msg.get_content(),
            "tls": ssl_object.version() if ssl_object else None,
            "login": login,
        }
        base = os.path.join(self.out, f"{time.time_ns()}-{self.n}")
        with open(base + ".eml.tmp", "wb") as f:
            f.write(raw)
        os.rename(base + ".eml.tmp", base + ".eml")
        with open(base + ".json.tmp", "w") as f:
            json.dump(record, f)
        os.rename(base + ".json.tmp", base + ".json")
        return "250 Message accepted for delivery"


def main():
    port, out, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    kwargs = {}
    if mode != "plain":
        user, password, cert, key = sys.argv[4:8]
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user and auth_data.password.decode() == password
            return AuthResult(success=ok, auth_data=auth_data)

        kwargs.update(authenticator=authenticator, auth_required=True)
        if mode == "starttls":
            kwargs.update(tls_context=ctx, require_starttls=True, auth_require_tls=True)
        else:
            # aiosmtpd only counts STARTTLS as TLS for auth_require_tls; SMTPS is TLS anyway.
            kwargs.update(ssl_context=ctx, auth_require_tls=False)
    controller = Controller(Save(out), hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    print("ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
