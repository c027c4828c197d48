# Deterministic redis commands of many sizes, then reads of what they made,
# for bench/run's redis case. Keys start with "chk:" so that redis-benchmark's
# own keys never mix in; the output (redis-cli) is compared between
# allocators. Usage: awk -v n=2000 -f redis_cmds.awk
BEGIN {
    if (n == "") n = 2000
    srand(6)
    s = "0123456789abcdefghijklmnopqrstuvwxyz"
    while (length(s) < 9000) s = s s
    for (i = 1; i <= n; i++) {
        printf "SET chk:k:%d %s\n", i, substr(s, 1 + i % 30, 1 + int(rand() * (rand() < 0.1 ? 8000 : 300)))
        printf "RPUSH chk:list v%d\n", i
        printf "HSET chk:h:%d f%d %s\n", i % 40, i, substr(s, 1, 1 + i % 200)
        printf "SADD chk:s:%d m%d\n", i % 25, i * 7
        printf "ZADD chk:z %d m%d\n", (i * 7919) % 10007, i
        if (i % 3 == 0) printf "DEL chk:k:%d\n", i - 1
        if (i % 5 == 0) printf "APPEND chk:k:%d %s\n", i, substr(s, 1, 500)
    }
    for (i = 1; i <= n; i += 97) printf "STRLEN chk:k:%d\n", i
    print "GET chk:k:10"; print "LLEN chk:list"; print "LRANGE chk:list 100 110"
    print "HLEN chk:h:7"; print "HGET chk:h:7 f287"; print "SCARD chk:s:3"; print "SISMEMBER chk:s:3 m21"
    print "ZRANGE chk:z 0 9 WITHSCORES"; print "ZCARD chk:z"; print "SORT chk:s:4 LIMIT 0 5 ALPHA"
    print "SUNIONSTORE chk:u chk:s:1 chk:s:2 chk:s:3"; print "SCARD chk:u"
    print "OBJECT ENCODING chk:list"; print "OBJECT ENCODING chk:h:1"; print "OBJECT ENCODING chk:z"
}
