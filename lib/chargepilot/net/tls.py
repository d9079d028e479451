"""TLS for the CSMS connection (security profiles 2 and 3): the client context
that verifies the CSMS, the station's certificate and key for mutual TLS, and a
failed attempt's error explained in one line.

Certificates and keys arrive as PEM or DER bytes (from flash on a board, files on
the host); MicroPython's mbedTLS and CPython's OpenSSL take them differently, and
each difference is handled here so that the agent never sees it.
"""


def verifies(ctx):
    """The context checks the CSMS chain (and host name: CPython's check_hostname;
    MicroPython's mbedTLS checks the server_hostname ws.py passes)."""
    import ssl

    if getattr(ctx, "verify_mode", None) != ssl.CERT_REQUIRED:
        return False
    return getattr(ctx, "check_hostname", True) is not False


def explain(e, ctx=None):
    """A failed connection attempt (`ctx`: the TLS context, None for ws://) as one
    line with its likely cause. Holds no secret: ws.py never puts header values
    in its errors."""
    text = " ".join(str(e).split())  # mbedTLS messages come with newlines
    low = text.lower()
    status = getattr(e, "status", None)
    if status in (401, 403):
        return text + " -- the CSMS refused the station's credentials (identity, BasicAuthPassword)"
    if ctx is None or "tcp connect" in low:
        return text
    cert = getattr(ctx, "has_client_cert", False)
    if "certificate required" in low or "handshake failure" in low and not cert:
        return text + " -- the CSMS wants a client certificate (security profile 3)"
    if ("certificate verify failed" in low or "the certificate" in low
            or "ca_chain_required" in low or "x509" in low):
        return text + " -- CSMS certificate not accepted (security event InvalidCsmsCertificate)"
    if "unknown ca" in low or "bad certificate" in low or "certificate unknown" in low:
        return text + " -- the CSMS did not accept the station certificate"
    if ("tls connect failed" in low or "during the handshake" in low or "closed while" in low
            or "handshake answer failed" in low):
        # The CSMS hung up in the TLS handshake (mbedTLS: EPIPE/ECONNRESET) or right
        # after it (TLS 1.3 sends its certificate alerts then: CPython reads EOF or
        # a reset while waiting for the HTTP answer).
        if cert:
            return text + " -- the CSMS ended the TLS session: it may not trust the station certificate"
        return text + " -- the CSMS ended the TLS session: it may want a client certificate (profile 3)"
    return text


def _pem_blocks(data, what):
    """PEM text -> [(label, DER bytes)]; bytes that are not PEM -> [(None, data)] (DER)."""
    import binascii

    if data.find(b"-----BEGIN ") < 0:
        if not data:
            raise ValueError("%s: empty" % what)
        return [(None, bytes(data))]
    out = []
    pos = 0
    while True:
        start = data.find(b"-----BEGIN ", pos)
        if start < 0:
            break
        eol = data.find(b"-----", start + 11)
        label = bytes(data[start + 11 : eol]).decode() if eol > 0 else ""
        end = data.find(b"-----END ", start)
        if eol < 0 or end < 0:
            raise ValueError("%s: PEM block without an END line" % what)
        body = data[data.find(b"\n", start) + 1 : end]
        if b"Proc-Type: 4,ENCRYPTED" in body:
            label = "ENCRYPTED " + label
        else:
            try:
                body = binascii.a2b_base64(bytes(body).replace(b"\r", b"").replace(b"\n", b""))
            except Exception:
                raise ValueError("%s: PEM block %r is not base64" % (what, label))
        out.append((label, body))
        pos = end + 9
    return out


def _der_to_pem(der, label):
    import binascii

    b64 = binascii.b2a_base64(der).replace(b"\n", b"")
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return b"-----BEGIN %s-----\n%s\n-----END %s-----\n" % (label.encode(), b"\n".join(lines),
                                                           label.encode())


def ssl_context(ca_data, cert=None, key=None):
    """A TLS client context that verifies the CSMS (chain and host name).

    `ca_data`: CA certificate(s), PEM (a bundle is fine) or DER bytes. `cert` and
    `key` (security profile 3, mutual TLS): the station's certificate and its
    unencrypted private key (PKCS#8, SEC1 or PKCS#1), PEM or DER bytes. The
    context gets `has_client_cert` (the agent's profile 3 check reads it).

    MicroPython (mbedTLS, TLS 1.2 or newer only) takes DER, one certificate per
    load_verify_locations call, and only the first certificate of `cert` (the
    CSMS must trust its issuer directly; no intermediates sent). CPython needs
    files for load_cert_chain: they live in a private temporary directory for
    the call only. Raises ValueError with the file's role in the message.
    """
    import ssl
    import sys

    if (cert is None) != (key is None):
        raise ValueError("a client certificate needs its key, and a key its certificate")
    cas = [b for b in _pem_blocks(ca_data, "CA file") if b[0] in (None, "CERTIFICATE")]
    if not cas:
        raise ValueError("CA file: no CERTIFICATE block")
    if cert is not None:
        certs = [b for b in _pem_blocks(cert, "client certificate") if b[0] in (None, "CERTIFICATE")]
        if not certs:
            raise ValueError("client certificate: no CERTIFICATE block")
        keys = [b for b in _pem_blocks(key, "client key") if b[0] is None or b[0].endswith("PRIVATE KEY")]
        if not keys:
            raise ValueError("client key: no PRIVATE KEY block")
        if keys[0][0] is not None and keys[0][0].startswith("ENCRYPTED"):
            raise ValueError("client key is encrypted; the station has no passphrase: store it unencrypted")
    if sys.implementation.name == "micropython":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.verify_mode = ssl.CERT_REQUIRED  # host name: ws.py passes server_hostname
        for _label, der in cas:
            try:
                ctx.load_verify_locations(cadata=der)
            except (ValueError, OSError) as e:
                raise ValueError("CA file: certificate not usable (%s)" % e)
        if cert is not None:
            try:
                ctx.load_cert_chain(certs[0][1], keys[0][1])
            except (ValueError, OSError) as e:
                raise ValueError("client certificate/key not usable (%s)" % e)
        ctx.has_client_cert = cert is not None
        return ctx
    if cas[0][0] is None:
        cadata = cas[0][1]
    else:
        cadata = "".join(_der_to_pem(der, "CERTIFICATE").decode() for _label, der in cas)
    try:
        ctx = ssl.create_default_context(cadata=cadata)  # CERT_REQUIRED + check_hostname
    except (ssl.SSLError, ValueError) as e:
        raise ValueError("CA file: certificate not usable (%s)" % e)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        _load_client_cert(ctx, certs, keys[0])
    ctx.has_client_cert = cert is not None
    return ctx


def _load_client_cert(ctx, certs, key):
    """CPython: load_cert_chain wants file names. On Linux they are anonymous memory
    files (memfd): the key never reaches a disk. Elsewhere: 0600 files in a 0700
    directory of our own, removed at once."""
    import os
    import ssl

    made = []  # (path, fd or None)

    def private_file(name, data):
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("chargepilot-" + name)
            os.write(fd, data)
            made.append((None, fd))
            return "/proc/self/fd/%d" % fd
        if not made or made[0][0] is None:
            d = os.path.join(os.environ.get("TMPDIR", "/tmp"),
                             "chargepilot-%s" % os.urandom(8).hex())
            os.mkdir(d, 0o700)
            made.insert(0, (d, None))
        path = os.path.join(made[0][0], name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, data)
        os.close(fd)
        made.append((path, None))
        return path

    try:
        cpath = private_file("cert.pem", b"".join(_der_to_pem(der, "CERTIFICATE")
                                                  for _label, der in certs))
        # A DER key does not say which kind it is: try the three unencrypted ones.
        labels = (key[0],) if key[0] else ("PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY")
        err = None
        for n, label in enumerate(labels):
            kpath = private_file("key%d.pem" % n, _der_to_pem(key[1], label))
            try:
                ctx.load_cert_chain(cpath, kpath, password=lambda: b"")
                return
            except (ssl.SSLError, ValueError) as e:
                err = e
        raise ValueError("client certificate/key not usable (%s)" % err)
    finally:
        for path, fd in reversed(made):
            try:
                if fd is not None:
                    os.close(fd)
                elif os.path.isdir(path):
                    os.rmdir(path)
                else:
                    os.remove(path)
            except OSError:
                pass
