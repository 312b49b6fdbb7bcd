#!/bin/sh
# Writes mta's users (argon2id hashes) as a Dovecot passwd-file, so that IMAP and POP3 take
# the same password as submission. Run by mta-dovecot-users.service whenever the users file
# changes; by hand: mta-dovecot-users.sh [USERS [PASSWD_FILE]].
set -eu
src=${1:-/var/lib/mta/users}
dest=${2:-/etc/dovecot/mta-users}
tmp=$dest.new
umask 077
# "address $argon2id$..." -> "address:{ARGON2ID}$argon2id$..."; comments and blanks dropped.
# Addresses in lower case, as Dovecot looks them up with auth_username_format = %Lu.
awk '!/^#/ && NF == 2 { print tolower($1) ":{ARGON2ID}" $2 }' "$src" > "$tmp"
if getent group dovecot > /dev/null; then
    chgrp dovecot "$tmp"
    chmod 0640 "$tmp"
fi
mv -f "$tmp" "$dest"
