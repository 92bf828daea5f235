#!/usr/bin/env bash
# A self-signed certificate for local use: make-cert.sh [DIR] writes DIR/visionq.crt and DIR/visionq.key
# (default: deploy/nginx/certs, which compose mounts). Never for production.
set -euo pipefail
dir=${1:-"$(dirname "$0")/certs"}
mkdir -p "$dir"
openssl req -x509 -newkey rsa:2048 -sha256 -days 365 -nodes \
    -keyout "$dir/visionq.key" -out "$dir/visionq.crt" \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
chmod 600 "$dir/visionq.key"
echo "wrote $dir/visionq.crt and $dir/visionq.key"
