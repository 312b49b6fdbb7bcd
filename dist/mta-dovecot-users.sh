#!/bin/sh
# Writes mta's users (argon2id hashes) as a Dovecot passwd-file, so that IMAP and POP3 take
# the same password as submission. Run by mta-dovecot-users.service whenever the users file
# changes; by hand: mta-dovecot-users.sh [USERS [PASSWD_FILE]].
#
# This runs as root, but the users file lives in a directory the user mta runs as owns,
# who could put a link to a root-only file or a FIFO in its place. So it must be a regular
# file, not a link, and it is read as the owner of its directory, within a time limit: a
# file swapped in after the check is read with that user's rights, or not at all. On any
# failure the passwd-file is left as it was.
set -eu
src=${1:-/var/lib/mta/users}
dest=${2:-/etc/dovecot/mta-users}
tmp=$dest.new
umask 077
if [ -L "$src" ] || [ ! -f "$src" ]; then
    echo "mta-dovecot-users: $src is not a regular file (a link is not followed); $dest unchanged" >&2
    exit 1
fi
owner=$(stat -c '%u %g' -- "$(dirname -- "$src")")
uid=${owner% *}
gid=${owner#* }
if [ "$(id -u)" = 0 ] && [ "$uid" != 0 ]; then
    users=$(timeout 10 setpriv --reuid="$uid" --regid="$gid" --clear-groups -- cat -- "$src")
else
    users=$(timeout 10 cat -- "$src")
fi
# "address $argon2id$..." -> "address:{ARGON2ID}$argon2id$..."; comments and blanks dropped.
# Addresses in lower case, as Dovecot looks them up with auth_username_format = %Lu.
printf '%s\n' "$users" | awk '!/^#/ && NF == 2 { print tolower($1) ":{ARGON2ID}" $2 }' > "$tmp"
if getent group dovecot > /dev/null; then
    chgrp dovecot "$tmp"
    chmod 0640 "$tmp"
fi
mv -f "$tmp" "$dest"
