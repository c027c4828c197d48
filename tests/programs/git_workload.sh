#!/bin/bash
# A deterministic git session in an empty directory: init, several commits,
# log, diff, blame, grep, gc, fsck, archive. Everything printed to stdout is
# identical under any correct malloc (fixed names, dates and config).
#
# Usage: git_workload.sh DIR
#   Every git command runs with LD_PRELOAD=$GM_PRELOAD (if set) and
#   GMALLOC_STATS=$GM_STATS (if set); this shell itself and the helpers
#   (awk, seq, sha256sum) run without them.
set -euo pipefail

dir=$1
mkdir -p "$dir"
cd "$dir"

export HOME=$dir GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export GIT_AUTHOR_NAME="A U Thor" GIT_AUTHOR_EMAIL=author@example.com
export GIT_COMMITTER_NAME="C O Mitter" GIT_COMMITTER_EMAIL=committer@example.com
export LC_ALL=C TZ=UTC GIT_PAGER=cat PAGER=cat
unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE

git() {
    if [ -n "${GM_PRELOAD:-}" ]; then
        LD_PRELOAD=$GM_PRELOAD GMALLOC_STATS=${GM_STATS:-} command git "$@"
    else
        command git "$@"
    fi
}

tick=1700000000
commit() {  # commit MESSAGE
    tick=$((tick + 3600))
    GIT_AUTHOR_DATE="@$tick +0000" GIT_COMMITTER_DATE="@$tick +0000" \
        git commit -q -m "$1"
    echo "commit $(git rev-parse HEAD) $1"
}

# Text files of a few KB to a few hundred KB, from a seeded generator.
gen() {  # gen FILE SEED LINES
    awk -v seed="$2" -v n="$3" 'BEGIN { srand(seed);
        for (i = 0; i < n; i++) printf "line %d: %d %s %x\n", i, int(rand() * 1e6),
            substr("the quick brown fox jumps over the lazy dog", 1 + int(rand() * 20)), int(rand() * 65536) }' > "$1"
}

git init -q -b main .
git config gc.auto 0
git config maintenance.auto false
git config core.autocrlf false
git config pack.threads 1

mkdir -p src doc data
for i in $(seq 1 60); do gen "src/file$i.c" "$i" $((50 + i * 7)); done
for i in $(seq 1 10); do gen "doc/page$i.txt" $((100 + i)) 400; done
gen data/big.txt 999 20000
git add -A
commit "initial import"

for round in 1 2 3 4 5 6; do
    for i in $(seq "$round" 7 60); do gen "src/file$i.c" $((i * 31 + round)) $((60 + i * 5 + round)); done
    gen "doc/page$round.txt" $((round * 1000)) 300
    awk -v r="$round" 'NR % (r + 3) != 0' data/big.txt > data/big.tmp && mv data/big.tmp data/big.txt
    if [ "$round" = 3 ]; then git mv -k src/file1.c src/renamed1.c; git rm -q doc/page10.txt; fi
    if [ "$round" = 4 ]; then git checkout -q -b topic; fi
    git add -A
    commit "round $round: edit $(git diff --cached --numstat | wc -l | tr -d ' ') files"
done
git checkout -q main
gen src/main-only.c 4242 500
git add -A
commit "main-only change"
GIT_AUTHOR_DATE="@$((tick + 100)) +0000" GIT_COMMITTER_DATE="@$((tick + 100)) +0000" \
    git merge -q --no-edit topic
echo "merge $(git rev-parse HEAD)"
GIT_COMMITTER_DATE="@$tick +0000" git tag -a -m "release one" v1 HEAD~2

echo "== log"
git log --graph --stat --format='%H %an %ad %s' --date=iso-strict
echo "== diff"
git diff --stat HEAD~5 HEAD
git diff -M HEAD~5 HEAD -- src | sha256sum
git diff --word-diff HEAD~3 HEAD -- data/big.txt | sha256sum
echo "== blame"
git blame -s --abbrev=12 src/file7.c | sha256sum
echo "== grep"
git grep -c 'lazy dog' HEAD -- src | sed -n 1,20p
echo "== rev-list"
git rev-list --objects --all | sort | sha256sum
git count-objects | sed 's/, [0-9]* kilobytes//'
echo "== gc"
git gc -q --prune=now
git count-objects -v | grep -E '^(count|in-pack|packs|prune-packable|garbage):'
echo "== fsck"
git fsck --full --strict --no-progress
echo "== after gc"
git log --format='%H %s' | sha256sum
git archive --format=tar HEAD | sha256sum
git cat-file -p HEAD:data/big.txt | sha256sum
git describe --tags HEAD~2
git status --porcelain
echo "== done"
