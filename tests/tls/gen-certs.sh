#!/usr/bin/env bash
# gen-certs.sh OUTDIR — throwaway PKI for the TLS tests and the TLS benchmark.
#
#   ca.pem/.key              test root CA (EC P-256)
#   inter.pem/.key           intermediate CA signed by the root
#   server-ec.pem/.key       EC P-256 leaf, SAN DNS:localhost + URI:sip:example.com (RFC 5922 form)
#   server-rsa.pem/.key      RSA-2048 leaf, SAN DNS:localhost
#   server-chain.pem/.key    leaf signed by the intermediate; the .pem holds leaf + intermediate
#   client.pem/.key          EC P-256 client certificate (clientAuth)
#   other-ca.pem             an unrelated CA (verification must fail against it)
#   wrong.key                an EC key that matches no certificate
#   server-other.pem/.key    EC P-256 leaf for another name: SAN DNS:other.test + DNS:*.wild.test
#   client2.pem/.key         a second EC P-256 client certificate
#   crl.pem                  CRL of the root CA revoking client2.pem (client.pem stays good)
#   crl2.pem                 CRL of the root CA revoking client.pem (client2.pem good)
#   inter-crl.pem            CRL of the intermediate CA, revoking nothing
#
# Idempotent: regenerates everything each run (a few hundred ms), so nothing can expire.
set -euo pipefail

out=${1:?usage: gen-certs.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd) # the work below happens in a temporary directory
tmp=$(mktemp -d "$out/.gen.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"

ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

ca() { # name subject [signer]
    ec "$1.key"
    if [[ -z ${3:-} ]]; then
        openssl req -x509 -new -key "$1.key" -out "$1.pem" -days 3650 -subj "$2" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    else
        openssl req -new -key "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
        printf 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n' >"$1.ext"
        openssl x509 -req -in "$1.csr" -CA "$3.pem" -CAkey "$3.key" -CAcreateserial \
            -days 3650 -out "$1.pem" -extfile "$1.ext" 2>/dev/null
    fi
}

leaf() { # name keyfile signer subject extensions
    openssl req -new -key "$2" -out "$1.csr" -subj "$4" 2>/dev/null
    printf '%s\n' "$5" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA "$3.pem" -CAkey "$3.key" -CAcreateserial \
        -days 825 -out "$1.pem" -extfile "$1.ext" 2>/dev/null
}

server_ext='basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth'

ca ca "/CN=sipslb test root CA"
ca other-ca "/CN=sipslb unrelated CA"
ca inter "/CN=sipslb test intermediate CA" ca

ec server-ec.key
leaf server-ec server-ec.key ca "/CN=localhost" \
    "$server_ext
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:127.0.0.2,IP:127.0.0.3,IP:::1,URI:sip:example.com"

openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out server-rsa.key 2>/dev/null
leaf server-rsa server-rsa.key ca "/CN=localhost" "$server_ext
subjectAltName=DNS:localhost"

ec server-chain.key
leaf server-chain-leaf server-chain.key inter "/CN=localhost" "$server_ext
subjectAltName=DNS:localhost"
cat server-chain-leaf.pem inter.pem >server-chain.pem

ec client.key
leaf client client.key ca "/CN=sipslb test client" 'basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth'

ec wrong.key

ec server-other.key
leaf server-other server-other.key ca "/CN=other.test" "$server_ext
subjectAltName=DNS:other.test,DNS:*.wild.test"

ec client2.key
leaf client2 client2.key ca "/CN=sipslb test client 2" 'basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth'

# CRLs from a throwaway `openssl ca` database: one revoking client2, one revoking client,
# and an empty one of the intermediate CA.
crl() { # out signer [revoked-cert]
    rm -rf crldb && mkdir crldb && : >crldb/index.txt && echo 01 >crldb/crlnumber
    printf '%s\n' '[ca]' 'default_ca = test_ca' '[test_ca]' 'database = crldb/index.txt' \
        'crlnumber = crldb/crlnumber' "certificate = $2.pem" "private_key = $2.key" \
        'default_md = sha256' 'default_crl_days = 30' >crldb/ca.cnf
    if [[ -n ${3:-} ]]; then
        openssl ca -config crldb/ca.cnf -revoke "$3" 2>/dev/null
    fi
    openssl ca -config crldb/ca.cnf -gencrl -out "$1" 2>/dev/null
}
crl crl.pem ca client2.pem
crl crl2.pem ca client.pem
crl inter-crl.pem inter

for f in ca.pem ca.key inter.pem server-ec.pem server-ec.key server-rsa.pem server-rsa.key \
    server-chain.pem server-chain.key client.pem client.key other-ca.pem wrong.key \
    server-other.pem server-other.key client2.pem client2.key crl.pem crl2.pem inter-crl.pem; do
    mv -f "$f" "$out/$f"
done
