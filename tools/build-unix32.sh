#!/bin/sh
# The team's board-twin build (../shared/micropython/build-unix32.sh), kept here so that a
# clone without ../shared/ can build the twin: tools/twin.py runs it with SRC= and CACHE=.
# Build the "board twin": a MicroPython unix port made to behave like an ESP32 where memory and
# numbers are concerned. 32-bit pointers (16-byte GC blocks), single-precision floats, a 2**30 ticks
# period and 31-bit small ints, statically linked. Optionally with your own modules FROZEN into the
# binary, as a firmware build freezes them (bytecode, qstrs and constants in ROM).
#
#   build-unix32.sh OUT_BINARY [FREEZE_MANIFEST]
#
# FREEZE_MANIFEST: a MicroPython manifest.py (package(), module(), include(); relative paths are
#   relative to it). extmod/asyncio is always frozen. Leave it out for a plain interpreter.
# Environment:
#   SRC=dir|tar.gz  MicroPython source (default: the tarball beside this script, unpacked once
#                   into $CACHE)
#   CACHE=dir       where the tarball is unpacked and built (default: ${XDG_CACHE_HOME:-~/.cache}/micropython-twin)
#   FLOAT=single    single (as on ESP32) or double (as the 64-bit unix port)
#   JOBS=2          make -j
#   STATIC=1        0 for a dynamic binary (needs a 32-bit libc where it runs)
# Needs: gcc-multilib (Debian: apt-get install -y gcc-multilib), make, python3. ~25 s on 2 cores.
#
# What it lacks next to a board: machine, network, ssl/tls/cryptolib (mbedtls is a git submodule and
# not in the tarball; on an ESP32 the TLS buffers live outside the MicroPython heap anyway), mip,
# btree, ffi. hashlib.sha1 (needed for Sec-WebSocket-Accept) comes from a small C stand-in below.
set -eu

usage="usage: $0 OUT_BINARY [FREEZE_MANIFEST]"
OUT=${1:?$usage}
FREEZE=${2:-}
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=${SRC:-$HERE/micropython-v1.29.0-preview-src.tar.gz}
CACHE=${CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/micropython-twin}
FLOAT=${FLOAT:-single}
JOBS=${JOBS:-2}
STATIC=${STATIC:-1}
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
if [ -n "$FREEZE" ]; then FREEZE=$(cd "$(dirname "$FREEZE")" && pwd)/$(basename "$FREEZE"); fi

if [ -f "$SRC" ]; then
    mkdir -p "$CACHE"
    top=$(tar -tzf "$SRC" | head -n 1 | cut -d/ -f1)
    if [ ! -d "$CACHE/$top" ]; then tar -xzf "$SRC" -C "$CACHE"; fi
    SRC="$CACHE/$top"
fi
SRC=$(cd "$SRC" && pwd)
UNIX="$SRC/ports/unix"

case "$FLOAT" in
    single) FLOATDEF="-DMICROPY_FLOAT_IMPL=MICROPY_FLOAT_IMPL_FLOAT" ;;
    double) FLOATDEF="" ;;
    *) echo "FLOAT must be single or double" >&2; exit 2 ;;
esac
# One build directory per configuration, so that switching FLOAT/FREEZE never mixes objects.
tag=$(printf '%s %s %s' "$FLOAT" "$FREEZE" "$STATIC" | cksum | cut -d' ' -f1)
BUILD=build-twin-$tag

# 1. Frozen modules: asyncio (in-tree) plus the caller's manifest. micropython-lib is a submodule
#    that is not in the tarball, so the variant's own manifest (mip, ssl, ...) is replaced, and
#    MPY_LIB_DIR points at an empty stand-in (the build only checks that its README.md exists).
MANIFEST="$UNIX/$BUILD-manifest.py"
mkdir -p "$UNIX"
echo 'include("$(MPY_DIR)/extmod/asyncio")' > "$MANIFEST"
if [ -n "$FREEZE" ]; then echo "include(\"$FREEZE\")" >> "$MANIFEST"; fi
NOLIB="$UNIX/no-micropython-lib"
mkdir -p "$NOLIB"
: > "$NOLIB/README.md"

# 2. hashlib.sha1 without mbedtls/axtls: extmod/modhashlib.c takes SHA1_CTX,
#    SHA1_Init/Update/Final and SHA1_SIZE from "lib/axtls/crypto/crypto.h" when
#    MICROPY_SSL_AXTLS is set. Provide that header (SHA-1 per FIPS 180-4) in a
#    directory searched first for quoted includes (-iquote); no axtls source is
#    compiled (that needs MICROPY_PY_SSL=1 in the makefiles, which stays 0).
SHIM="$UNIX/sha1-shim"
mkdir -p "$SHIM/lib/axtls/crypto"
cat > "$SHIM/lib/axtls/crypto/crypto.h" <<'EOF'
/* Stand-in for axtls's crypto.h: only what extmod/modhashlib.c uses for sha1. */
#ifndef SHA1_SHIM_CRYPTO_H
#define SHA1_SHIM_CRYPTO_H
#include <stdint.h>
#include <string.h>
#define SHA1_SIZE 20
typedef struct {
    uint32_t h[5];
    uint64_t len;      /* bytes hashed so far */
    uint8_t buf[64];
} SHA1_CTX;
static inline uint32_t sha1_rol(uint32_t x, int n) {
    return (x << n) | (x >> (32 - n));
}
static inline void sha1_block(SHA1_CTX *c, const uint8_t *p) {
    uint32_t w[80], a, b, d, e, f, k, t, cc;
    int i;
    for (i = 0; i < 16; i++) {
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16
            | (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
    }
    for (; i < 80; i++) {
        w[i] = sha1_rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    }
    a = c->h[0]; b = c->h[1]; cc = c->h[2]; d = c->h[3]; e = c->h[4];
    for (i = 0; i < 80; i++) {
        if (i < 20) {
            f = (b & cc) | (~b & d); k = 0x5A827999;
        } else if (i < 40) {
            f = b ^ cc ^ d; k = 0x6ED9EBA1;
        } else if (i < 60) {
            f = (b & cc) | (b & d) | (cc & d); k = 0x8F1BBCDC;
        } else {
            f = b ^ cc ^ d; k = 0xCA62C1D6;
        }
        t = sha1_rol(a, 5) + f + e + k + w[i];
        e = d; d = cc; cc = sha1_rol(b, 30); b = a; a = t;
    }
    c->h[0] += a; c->h[1] += b; c->h[2] += cc; c->h[3] += d; c->h[4] += e;
}
static inline void SHA1_Init(SHA1_CTX *c) {
    c->h[0] = 0x67452301; c->h[1] = 0xEFCDAB89; c->h[2] = 0x98BADCFE;
    c->h[3] = 0x10325476; c->h[4] = 0xC3D2E1F0;
    c->len = 0;
}
static inline void SHA1_Update(SHA1_CTX *c, const uint8_t *p, int n) {
    size_t used = (size_t)(c->len & 63);
    c->len += (uint64_t)n;
    while (n > 0) {
        size_t take = 64 - used;
        if ((size_t)n < take) {
            take = (size_t)n;
        }
        memcpy(c->buf + used, p, take);
        used += take; p += take; n -= (int)take;
        if (used == 64) {
            sha1_block(c, c->buf);
            used = 0;
        }
    }
}
static inline void SHA1_Final(uint8_t *digest, SHA1_CTX *c) {
    uint64_t bits = c->len * 8;
    size_t used = (size_t)(c->len & 63);
    int i;
    c->buf[used++] = 0x80;
    if (used > 56) {
        memset(c->buf + used, 0, 64 - used);
        sha1_block(c, c->buf);
        used = 0;
    }
    memset(c->buf + used, 0, 56 - used);
    for (i = 0; i < 8; i++) {
        c->buf[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
    }
    sha1_block(c, c->buf);
    for (i = 0; i < 20; i++) {
        digest[i] = (uint8_t)(c->h[i / 4] >> (24 - 8 * (i % 4)));
    }
}
#endif
EOF

LDX=""
if [ "$STATIC" = 1 ]; then LDX="-static"; fi

make -C "$SRC/mpy-cross" -j"$JOBS" >/dev/null
make -C "$UNIX" -j"$JOBS" \
    VARIANT=standard BUILD="$BUILD" \
    MICROPY_FORCE_32BIT=1 \
    MICROPY_PY_FFI=0 \
    MICROPY_PY_BTREE=0 \
    MICROPY_PY_SSL=0 MICROPY_SSL_MBEDTLS=0 MICROPY_SSL_AXTLS=0 \
    FROZEN_MANIFEST="$MANIFEST" MPY_LIB_DIR="$NOLIB" \
    CFLAGS_EXTRA="-iquote $SHIM -DMICROPY_SSL_AXTLS=1 -DMICROPY_PY_HASHLIB_SHA1=1 $FLOATDEF" \
    LDFLAGS_EXTRA="$LDX" >/dev/null

mkdir -p "$(dirname "$OUT")"
# via a temporary name: agents may be running the old binary (cp onto it: "text file busy")
cp "$UNIX/$BUILD/micropython" "$OUT.tmp.$$"
mv -f "$OUT.tmp.$$" "$OUT"
"$OUT" -X heapsize=100K -c "
import sys, time, hashlib, binascii
assert sys.maxsize == 2**31 - 1, 'not a 32-bit build'
assert hashlib.sha1(b'abc').digest() == binascii.unhexlify('a9993e364706816aba3e25717850c26c9cd0d89d')
h = hashlib.sha1()
for i in range(1000):
    h.update(b'a' * 1000)
assert h.digest() == binascii.unhexlify('34aa973cd4c4daa4f61eeb2bdbad27316534016f')
import asyncio, select, socket, vfs
vfs.VfsLfs2, vfs.VfsFat, vfs.VfsRom
print('twin ok:', sys.implementation.version, 'float', '$FLOAT', 'ticks period', time.ticks_add(0, -1) + 1)
"
