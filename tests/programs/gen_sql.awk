# Generates a deterministic SQL workload for sqlite3 on stdout.
# Usage: awk -v scale=1 -f gen_sql.awk
#   scale 1: ~5k customers, ~40k orders, ~100k order lines (a few seconds).
# Every query's result goes to stdout, so the output can be compared between
# two runs of sqlite3 (glibc vs. LD_PRELOAD).
function rnd(n) { return int(rand() * n) }
function word(    l, s) { l = 3 + rnd(12); s = substr(alpha, 1 + rnd(length(alpha) - l), l); return s }
function text(nw,    i, s) { s = word(); for (i = 1; i < nw; i++) s = s " " word(); return s }
BEGIN {
    if (scale == "") scale = 1
    srand(4242)
    alpha = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore magna aliqua ut enim ad minim veniam quis nostrud exercitation ullamco laboris nisi aliquip ex ea commodo consequat"
    gsub(/ /, "", alpha)
    ncust = int(5000 * scale); nord = int(40000 * scale); nprod = 2000

    print ".bail on"
    print "PRAGMA cache_size = -65536;"      # 64 MB of page cache, all malloc'd
    print "PRAGMA temp_store = MEMORY;"
    print "CREATE TABLE customer (id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT, note TEXT);"
    print "CREATE TABLE product (id INTEGER PRIMARY KEY, title TEXT, price REAL, blob BLOB);"
    print "CREATE TABLE orders (id INTEGER PRIMARY KEY, cust INTEGER REFERENCES customer(id), day INTEGER, status TEXT);"
    print "CREATE TABLE line (ord INTEGER, prod INTEGER, qty INTEGER, comment TEXT);"

    print "BEGIN;"
    for (i = 1; i <= nprod; i++)
        printf "INSERT INTO product VALUES (%d, '%s', %d.%02d, zeroblob(%d));\n", i, text(1 + rnd(6)), 1 + rnd(500), rnd(100), rnd(3000)
    print "COMMIT;"
    print "BEGIN;"
    for (i = 1; i <= ncust; i++) {
        printf "INSERT INTO customer VALUES (%d, '%s', 'city%d', '%s');\n", i, text(2), rnd(97), text(rnd(40))
        if (i % 5000 == 0) { print "COMMIT;"; print "BEGIN;" }
    }
    print "COMMIT;"
    nline = 0
    print "BEGIN;"
    for (i = 1; i <= nord; i++) {
        printf "INSERT INTO orders VALUES (%d, %d, %d, '%s');\n", i, 1 + rnd(ncust), rnd(365), (rnd(10) < 8 ? "done" : "open")
        k = 1 + rnd(5)
        for (j = 0; j < k; j++) {
            printf "INSERT INTO line VALUES (%d, %d, %d, %s);\n", i, 1 + rnd(nprod), 1 + rnd(9), (rnd(4) == 0 ? "'" text(1 + rnd(20)) "'" : "NULL")
            nline++
        }
        if (i % 4000 == 0) { print "COMMIT;"; print "BEGIN;" }
    }
    print "COMMIT;"

    print "CREATE INDEX line_ord ON line(ord);"
    print "CREATE INDEX line_prod ON line(prod, qty);"
    print "CREATE INDEX orders_cust ON orders(cust, day);"
    print "CREATE INDEX customer_city ON customer(city, name);"

    print "SELECT 'counts', (SELECT count(*) FROM customer), (SELECT count(*) FROM orders), (SELECT count(*) FROM line), (SELECT count(*) FROM product);"
    print "SELECT 'revenue', round(sum(l.qty * p.price), 2) FROM line l JOIN product p ON p.id = l.prod;"
    print "SELECT c.city, count(DISTINCT o.id), round(sum(l.qty * p.price), 2) FROM customer c JOIN orders o ON o.cust = c.id JOIN line l ON l.ord = o.id JOIN product p ON p.id = l.prod GROUP BY c.city ORDER BY 3 DESC, 1 LIMIT 20;"
    print "SELECT o.day / 30 AS month, o.status, count(*), sum(l.qty) FROM orders o JOIN line l ON l.ord = o.id GROUP BY month, o.status ORDER BY month, o.status;"
    print "SELECT c.name, c.id, count(o.id) AS n FROM customer c LEFT JOIN orders o ON o.cust = c.id GROUP BY c.id ORDER BY n DESC, c.id LIMIT 25;"
    print "SELECT p.title, sum(l.qty) s FROM product p JOIN line l ON l.prod = p.id GROUP BY p.id ORDER BY s DESC, p.id LIMIT 25;"
    print "SELECT group_concat(name, ',') FROM (SELECT name FROM customer WHERE city = 'city7' ORDER BY name, id LIMIT 200);"
    print "SELECT length(group_concat(comment, '|')) FROM line WHERE comment IS NOT NULL;"
    print "SELECT upper(substr(note, 1, 30)), length(note) FROM customer ORDER BY length(note) DESC, id LIMIT 20;"
    print "WITH RECURSIVE r(x, s) AS (SELECT 1, '' UNION ALL SELECT x + 1, s || printf('%05d', x) FROM r WHERE x < 3000) SELECT max(x), length(s), substr(s, -20) FROM r WHERE x = 3000;"
    print "SELECT cust, day, row_number() OVER (PARTITION BY cust ORDER BY day, id) FROM orders WHERE cust % 500 = 0 ORDER BY cust, day, id;"

    # Churn: deletes, updates, more inserts into freed space, then vacuum.
    print "BEGIN;"
    print "DELETE FROM line WHERE ord % 3 = 0;"
    print "DELETE FROM orders WHERE id % 3 = 0;"
    print "UPDATE customer SET note = note || ' ' || note WHERE id % 4 = 1;"
    print "UPDATE line SET comment = printf('%.*c', qty * 50, 'x') WHERE ord % 7 = 1;"
    print "COMMIT;"
    print "BEGIN;"
    for (i = 1; i <= nord / 4; i++)
        printf "INSERT INTO line VALUES (%d, %d, %d, '%s');\n", 3 * (1 + rnd(nord / 3)) - 1, 1 + rnd(nprod), 1 + rnd(9), text(1 + rnd(8))
    print "COMMIT;"
    print "CREATE TEMP TABLE big AS SELECT l.ord, group_concat(p.title, ';') AS titles FROM line l JOIN product p ON p.id = l.prod GROUP BY l.ord;"
    print "SELECT count(*), sum(length(titles)) FROM big;"
    print "DROP TABLE big;"
    print "VACUUM;"
    print "PRAGMA integrity_check;"
    print "SELECT 'after', (SELECT count(*) FROM orders), (SELECT count(*) FROM line), (SELECT sum(length(note)) FROM customer), (SELECT sum(length(comment)) FROM line);"
    print "SELECT status, count(*), min(day), max(day), avg(day) FROM orders GROUP BY status ORDER BY status;"
    print "SELECT ord, count(*), sum(qty) FROM line GROUP BY ord ORDER BY 3 DESC, 1 LIMIT 20;"
}
