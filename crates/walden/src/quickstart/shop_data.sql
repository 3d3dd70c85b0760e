-- walden quickstart: demo shop data (deterministic).
--
-- Preconditions: shop_schema.sql has been run on this (empty) database, and
-- the SAME session has set the scale (= number of orders) first:
--
--     SET walden.scale = '100000';
--
-- The whole file is meant to be sent as ONE multi-statement simple query
-- (tokio-postgres `batch_execute`), which the server runs as one implicit
-- transaction: either everything loads or nothing does. It uses no psql
-- meta-commands or variables.
--
-- Derived sizes (S = walden.scale):
--     customers   greatest(1, S/5)
--     addresses   customers + customers/5          (~1.2 per customer)
--     products    2000 (fixed catalogue)
--     orders      S
--     order_lines 1..4 per order                   (~2.5 S)
--     payments    1 charge per paid/shipped/delivered/refunded order,
--                 + 1 refund per refunded order, + a declined attempt
--                 before ~4% of orders (~1/3 of cancelled ones)      (~1.02 S)
--
-- Determinism: every value is a pure function of the row's key. Pseudo-random
-- numbers come from hashint8extended(key, seed) (the hash behind hash
-- partitioning, so it is stable across releases; pure integer arithmetic, so
-- it is the same on every CPU), no floating point is used, timestamps are a fixed
-- epoch (2024-01-01 00:00:00 UTC) plus whole seconds (independent of the
-- session TimeZone), and nothing reads the clock or random(). Running this
-- twice with the same scale produces identical rows.
--
-- Invariants (checkable):
--     orders.subtotal = round(sum(quantity * unit_price * (1 - discount)), 2)
--                       over the order's lines
--     orders.total    = subtotal + tax + shipping_fee   (also a CHECK)
--     orders.shipped_at IS NOT NULL  <=>  status IN ('shipped', 'delivered')

-- Bulk-load settings, scoped to this transaction (if the statements are
-- instead run one by one in autocommit mode, these only warn; the load is
-- then slower but identical). JIT compilation alone would cost seconds on
-- these large, cheap queries.
SET LOCAL jit = off;
SET LOCAL work_mem = '64MB';

DO $$
BEGIN
    IF coalesce(current_setting('walden.scale', true), '') !~ '^[0-9]{1,9}$'
       OR current_setting('walden.scale')::int < 1 THEN
        RAISE EXCEPTION 'walden.scale must be set to a positive integer in this session (e.g. SET walden.scale = ''100000''), got %',
            coalesce(current_setting('walden.scale', true), '<unset>');
    END IF;
    IF EXISTS (SELECT FROM customers) OR EXISTS (SELECT FROM products)
       OR EXISTS (SELECT FROM orders) THEN
        RAISE EXCEPTION 'the shop tables are not empty: load the demo data only once, right after shop_schema.sql';
    END IF;
END
$$;

-- Bulk-load trick, as pg_restore does it: maintaining indexes row by row and
-- firing a foreign-key trigger per row would cost more than generating the
-- data, so the shop tables' primary keys, unique constraints, foreign keys and
-- other indexes are dropped here and re-created, fully validated, at the end
-- of this file (ADD CONSTRAINT checks every row: duplicate keys or dangling
-- references fail the load). Their exact definitions are read from the
-- catalog and kept in a session setting (walden.shop_deferred_ddl; rolled back
-- with everything else if the load fails), so shop_schema.sql stays the
-- single source of truth for them. CHECK and NOT NULL constraints stay.
DO $$
DECLARE
    d record;
BEGIN
    PERFORM set_config('walden.shop_deferred_ddl', (
        SELECT coalesce(json_agg(x ORDER BY x.step, x.name), '[]')::text
        FROM (
            -- step 1: primary keys, 2: unique constraints, 4: foreign keys
            SELECT CASE c.contype WHEN 'p' THEN 1 WHEN 'u' THEN 2 ELSE 4 END AS step,
                   c.conname AS name,
                   format('ALTER TABLE %s DROP CONSTRAINT %I',
                          c.conrelid::regclass, c.conname) AS drop_sql,
                   format('ALTER TABLE %s ADD CONSTRAINT %I %s',
                          c.conrelid::regclass, c.conname, pg_get_constraintdef(c.oid)) AS create_sql
            FROM pg_constraint AS c
            WHERE c.contype IN ('p', 'u', 'f')
              AND c.conrelid IN ('customers'::regclass, 'addresses'::regclass,
                                 'products'::regclass, 'orders'::regclass,
                                 'order_lines'::regclass, 'payments'::regclass)
            UNION ALL
            -- step 3: indexes that do not belong to a constraint
            SELECT 3, ic.relname::text,
                   format('DROP INDEX %s', i.indexrelid::regclass),
                   pg_get_indexdef(i.indexrelid)
            FROM pg_index AS i
            JOIN pg_class AS ic ON ic.oid = i.indexrelid
            WHERE i.indrelid IN ('customers'::regclass, 'addresses'::regclass,
                                 'products'::regclass, 'orders'::regclass,
                                 'order_lines'::regclass, 'payments'::regclass)
              AND NOT EXISTS (SELECT 1 FROM pg_constraint AS c
                              WHERE c.conindid = i.indexrelid
                                AND c.conrelid = i.indrelid
                                AND c.contype IN ('p', 'u', 'x'))
        ) AS x
    ), false);
    -- drop in reverse order: foreign keys before the keys they reference
    FOR d IN SELECT * FROM json_to_recordset(current_setting('walden.shop_deferred_ddl')::json)
                        AS x(step int, name text, drop_sql text, create_sql text)
             ORDER BY step DESC, name
    LOOP
        EXECUTE d.drop_sql;
    END LOOP;
END
$$;

-- ---------------------------------------------------------------------------
-- customers
-- ---------------------------------------------------------------------------
INSERT INTO customers (id, email, full_name, country, created_at,
                       marketing_opt_in, loyalty_points, notes, preferences)
WITH
names AS (
    SELECT
        ARRAY['Olivia','Liam','Emma','Noah','Sophia','Lucas','Mia','Elias',
              'José','Zoë','Søren','François','Łukasz','Jürgen','Ana','Chloé',
              'Björn','Aoife','Mateo','Hana','Yuki','Chen','Priya','Omar',
              'Fatima','Ingrid','Renée','Nikolai','Maëlle','Tomás'] AS first_names,
        ARRAY['olivia','liam','emma','noah','sophia','lucas','mia','elias',
              'jose','zoe','soren','francois','lukasz','juergen','ana','chloe',
              'bjorn','aoife','mateo','hana','yuki','chen','priya','omar',
              'fatima','ingrid','renee','nikolai','maelle','tomas'] AS first_ascii,
        ARRAY['Smith','Müller','García','Martin','Johansson','de Vries','O''Brien',
              'Rossi','Nguyễn','Tanaka','Kowalski','Dubois','Silva','Andersson',
              'Schröder','Fernández','Brown','Wilson','Novák','Jensen','Yamamoto',
              'Peña','Lefèvre','Walsh','Kim'] AS last_names,
        ARRAY['smith','mueller','garcia','martin','johansson','devries','obrien',
              'rossi','nguyen','tanaka','kowalski','dubois','silva','andersson',
              'schroeder','fernandez','brown','wilson','novak','jensen','yamamoto',
              'pena','lefevre','walsh','kim'] AS last_ascii,
        ARRAY['山田 太郎','佐藤 花子','鈴木 一郎','高橋 美咲','田中 健'] AS jp_names,
        ARRAY['US','US','US','US','US','US','GB','GB','GB','DE','DE','DE',
              'FR','FR','NL','SE','ES','JP','BR','CA'] AS countries,
        ARRAY['example.com','example.org','example.net','mail.example'] AS domains,
        ARRAY['Kitchen','Home','Outdoor','Electronics','Books','Toys',
              'Apparel','Beauty','Grocery','Garden','Sports','Office'] AS categories
),
base AS (
    SELECT
        i,
        h.*,
        n.countries[1 + h.h3 % 20] AS country
    FROM generate_series(1, greatest(1, current_setting('walden.scale')::int / 5)) AS i
    CROSS JOIN LATERAL (
        SELECT (hashint8extended(i, 101) & 2147483647)::int AS h1,
               (hashint8extended(i, 102) & 2147483647)::int AS h2,
               (hashint8extended(i, 103) & 2147483647)::int AS h3,
               (hashint8extended(i, 104) & 2147483647)::int AS h4,
               (hashint8extended(i, 105) & 2147483647)::int AS h5,
               (hashint8extended(i, 106) & 2147483647)::int AS h6,
               (hashint8extended(i, 107) & 2147483647)::int AS h7
    ) AS h
    CROSS JOIN names AS n
)
SELECT
    b.i,
    n.first_ascii[1 + b.h1 % 30] || '.' || n.last_ascii[1 + b.h2 % 25] || '.' || b.i
        || '@' || n.domains[1 + b.h4 % 4],
    CASE WHEN b.country = 'JP' AND b.h5 % 2 = 0
         THEN n.jp_names[1 + b.h6 % 5]
         ELSE n.first_names[1 + b.h1 % 30] || ' ' || n.last_names[1 + b.h2 % 25]
    END,
    b.country,
    -- signed up during the two years before the epoch
    timestamptz '2024-01-01 00:00:00+00'
        - make_interval(secs => 1 + b.h4 % (2 * 365 * 86400)),
    b.h5 % 3 = 0,
    CASE WHEN b.h6 % 5 = 0 THEN 0 ELSE b.h6 % 5000 END,
    CASE b.h7 % 50
        WHEN 0 THEN 'Prefers delivery after 6pm'
        WHEN 1 THEN E'Gate code 4821.\nLeave parcel with the neighbour if not home.'
        WHEN 2 THEN 'Said: "the mug arrived chipped" — sent a replacement'
        WHEN 3 THEN 'VIP 🌟 handle with care'
        WHEN 4 THEN E'Imported from legacy CRM\t(id\\ref: A-17)'
        ELSE NULL
    END,
    jsonb_build_object(
        'language', CASE b.country
                        WHEN 'DE' THEN 'de' WHEN 'FR' THEN 'fr' WHEN 'NL' THEN 'nl'
                        WHEN 'SE' THEN 'sv' WHEN 'ES' THEN 'es' WHEN 'JP' THEN 'ja'
                        WHEN 'BR' THEN 'pt-BR'
                        WHEN 'CA' THEN CASE WHEN b.h7 % 3 = 0 THEN 'fr-CA' ELSE 'en-CA' END
                        ELSE 'en'
                    END,
        'newsletter', b.h5 % 3 = 0,
        'theme', CASE WHEN b.h3 % 7 = 0 THEN NULL
                      ELSE (ARRAY['light','dark','system'])[1 + b.h1 % 3] END,
        'notifications', jsonb_build_object('email', b.h2 % 4 <> 0,
                                            'sms', b.h3 % 5 = 0,
                                            'push', b.h4 % 2 = 0),
        'favorite_categories',
            CASE b.h6 % 4
                WHEN 0 THEN '[]'::jsonb
                WHEN 1 THEN jsonb_build_array(n.categories[1 + b.h7 % 12])
                ELSE jsonb_build_array(n.categories[1 + b.h7 % 12],
                                       n.categories[1 + (b.h7 + 5) % 12])
            END,
        'shoe_size_eu', CASE WHEN b.h2 % 6 = 0 THEN to_jsonb(36 + b.h5 % 11) END
    )
FROM base AS b
CROSS JOIN names AS n;

-- ---------------------------------------------------------------------------
-- addresses: id c = default shipping address of customer c (every customer);
-- ids C+1 .. C+C/5 = a second address for every 5th customer.
-- ---------------------------------------------------------------------------
INSERT INTO addresses (id, customer_id, kind, line1, city, postal_code,
                       country, is_default)
WITH
params AS (
    SELECT greatest(1, current_setting('walden.scale')::int / 5) AS c
),
geo (country, cities, streets, number_first) AS (
    VALUES
    ('US', ARRAY['New York','San Francisco','Austin','Chicago','Seattle','Boston','Denver','Portland'],
           ARRAY['Main St','Oak Avenue','Maple Drive','Broadway','Elm Street','Pine Road','Cedar Lane'], true),
    ('GB', ARRAY['London','Manchester','Edinburgh','Bristol','Leeds','Cardiff'],
           ARRAY['High Street','Station Road','Church Lane','Victoria Road','Mill Lane'], true),
    ('DE', ARRAY['Berlin','München','Köln','Hamburg','Düsseldorf','Frankfurt am Main'],
           ARRAY['Hauptstraße','Schillerstraße','Gartenweg','Bahnhofstraße','Lindenallee'], false),
    ('FR', ARRAY['Paris','Lyon','Marseille','Orléans','Besançon','Nîmes'],
           ARRAY['Rue de la Paix','Avenue des Champs-Élysées','Rue Victor Hugo','Boulevard Saint-Germain','Rue de l''Église'], true),
    ('NL', ARRAY['Amsterdam','Rotterdam','Utrecht','Den Haag','Eindhoven'],
           ARRAY['Keizersgracht','Prinsengracht','Dorpsstraat','Kerkstraat'], false),
    ('SE', ARRAY['Stockholm','Göteborg','Malmö','Uppsala','Västerås'],
           ARRAY['Drottninggatan','Kungsgatan','Storgatan','Östra Hamngatan'], false),
    ('ES', ARRAY['Madrid','Barcelona','Sevilla','Málaga','A Coruña'],
           ARRAY['Calle Mayor','Gran Vía','Calle de Alcalá','Avenida de la Constitución'], false),
    ('JP', ARRAY['東京都渋谷区','大阪市北区','京都市中京区','Sapporo','Yokohama'],
           ARRAY['神宮前','道玄坂','Nishi-Shinjuku','Umeda'], false),
    ('BR', ARRAY['São Paulo','Rio de Janeiro','Belo Horizonte','Curitiba','Florianópolis'],
           ARRAY['Rua Augusta','Avenida Paulista','Rua das Flores','Avenida Atlântica'], false),
    ('CA', ARRAY['Toronto','Montréal','Vancouver','Québec','Calgary'],
           ARRAY['Yonge Street','Rue Sainte-Catherine','Granville Street','King Street West'], true)
),
base AS (
    SELECT
        a,
        CASE WHEN a <= p.c THEN a ELSE (a - p.c) * 5 END AS customer_id,
        a > p.c AS secondary,
        h.*
    FROM params AS p
    CROSS JOIN LATERAL generate_series(1, p.c + p.c / 5) AS a
    CROSS JOIN LATERAL (
        SELECT (hashint8extended(a, 201) & 2147483647)::int AS h1,
               (hashint8extended(a, 202) & 2147483647)::int AS h2,
               (hashint8extended(a, 203) & 2147483647)::int AS h3,
               (hashint8extended(a, 204) & 2147483647)::int AS h4,
               (hashint8extended(a, 205) & 2147483647)::int AS h5,
               (hashint8extended(a, 206) & 2147483647)::int AS h6
    ) AS h
)
SELECT
    b.a,
    b.customer_id,
    CASE WHEN b.secondary AND b.h1 % 3 = 0 THEN 'shipping' WHEN b.secondary THEN 'billing' ELSE 'shipping' END,
    CASE WHEN g.number_first
         THEN (1 + b.h2 % 9999)::text || ' ' || g.streets[1 + b.h3 % array_length(g.streets, 1)]
         ELSE g.streets[1 + b.h3 % array_length(g.streets, 1)] || ' ' || (1 + b.h2 % 250)::text
    END
    || CASE WHEN b.h4 % 6 = 0 THEN ', Apt ' || (1 + b.h4 % 40)::text
                                     || substr('ABCDEF', 1 + b.h5 % 6, 1)
            ELSE '' END,
    g.cities[1 + b.h4 % array_length(g.cities, 1)],
    CASE c.country
        WHEN 'US' THEN lpad((1 + b.h5 % 99999)::text, 5, '0')
                       || CASE WHEN b.h6 % 4 = 0 THEN '-' || lpad((b.h6 % 10000)::text, 4, '0') ELSE '' END
        WHEN 'GB' THEN substr('ABCDEFGHJKLMNPRSTUWYZ', 1 + b.h5 % 21, 1)
                       || substr('ABCDEFGHJKLMNPRSTUWYZ', 1 + b.h6 % 21, 1)
                       || (1 + b.h5 % 9)::text || ' ' || (b.h6 % 10)::text
                       || substr('ABDEFGHJLNPQRSTUWXYZ', 1 + b.h2 % 20, 1)
                       || substr('ABDEFGHJLNPQRSTUWXYZ', 1 + b.h3 % 20, 1)
        WHEN 'NL' THEN (1000 + b.h5 % 9000)::text || ' '
                       || substr('ABCDEFGHJKLMNPRSTVWXZ', 1 + b.h6 % 21, 1)
                       || substr('ABCDEFGHJKLMNPRSTVWXZ', 1 + b.h2 % 21, 1)
        WHEN 'SE' THEN (100 + b.h5 % 900)::text || ' ' || lpad((b.h6 % 100)::text, 2, '0')
        WHEN 'JP' THEN lpad((b.h5 % 1000)::text, 3, '0') || '-' || lpad((b.h6 % 10000)::text, 4, '0')
        WHEN 'BR' THEN lpad((b.h5 % 100000)::text, 5, '0') || '-' || lpad((b.h6 % 1000)::text, 3, '0')
        WHEN 'CA' THEN substr('ABCEGHJKLMNPRSTVXY', 1 + b.h5 % 18, 1) || (b.h6 % 10)::text
                       || substr('ABCEGHJKLMNPRSTVWXYZ', 1 + b.h2 % 20, 1) || ' '
                       || (b.h3 % 10)::text
                       || substr('ABCEGHJKLMNPRSTVWXYZ', 1 + b.h4 % 20, 1)
                       || (b.h5 % 10)::text
        ELSE lpad((1000 + b.h5 % 98000)::text, 5, '0')          -- DE, FR, ES
    END,
    c.country,
    NOT (b.secondary AND b.h1 % 3 = 0)
FROM base AS b
JOIN customers AS c ON c.id = b.customer_id
JOIN geo AS g ON g.country = c.country;

-- ---------------------------------------------------------------------------
-- products: a fixed catalogue of 2000
-- ---------------------------------------------------------------------------
INSERT INTO products (id, sku, name, category, price, cost, weight_grams,
                      tags, attributes, active, created_at, discontinued_on)
WITH
catalog (cat_no, category, items, price_mult) AS (
    VALUES
    (0,  'Kitchen',     ARRAY['Café Crème Mug','Chef''s Knife','Crème Brûlée Torch','Espresso Cup Set','日本製 Santoku Knife','Cast Iron Skillet'], 1),
    (1,  'Home',        ARRAY['Linen Throw','Scented Candle','Ceramic Vase','Wool Rug','Lampe de Chevet'], 1),
    (2,  'Outdoor',     ARRAY['Camping Lantern','Trail Backpack','Hammock','Rain Jacket','Two-Person Tent'], 3),
    (3,  'Electronics', ARRAY['USB-C Cable','Wireless Earbuds','Smart Plug','Rocket Lamp','Power Bank','Mechanical Keyboard'], 3),
    (4,  'Books',       ARRAY['Smørrebrød & More (Cookbook)','Field Guide to Birds','Les Misérables (Paperback)','三体 The Three-Body Problem','Learn Rust in 24 Hours'], 1),
    (5,  'Toys',        ARRAY['Wooden Train Set','Plush Panda','Puzzle 1000 pcs','Building Blocks'], 1),
    (6,  'Apparel',     ARRAY['Merino T-Shirt','Señorita Sun Hat','Rain Boots','Cashmere Scarf','Socks (3-pack)'], 1),
    (7,  'Beauty',      ARRAY['Rosé Face Mist','Lip Balm','Argan Oil','Bamboo Toothbrush'], 1),
    (8,  'Grocery',     ARRAY['抹茶 Matcha Powder','Jalapeño Hot Sauce','Dark Chocolate 85%','Single-Origin Coffee','Crème de Marrons'], 1),
    (9,  'Garden',      ARRAY['Pruning Shears','Terracotta Pot','Seed Starter Kit','Garden Gnome'], 1),
    (10, 'Sports',      ARRAY['Yoga Mat','Jump Rope','Kettlebell 12 kg','Water Bottle'], 1),
    (11, 'Office',      ARRAY['Fountain Pen','Notebook A5 Dotted','Desk Lamp','Cable Organizer'], 1)
),
words AS (
    SELECT
        ARRAY['Classic','Deluxe','Eco','Mini','Pro','Vintage','Everyday','Limited Edition','Nordic','Urban'] AS adjectives,
        ARRAY['black','white','red','navy','olive','sand','terracotta','charcoal'] AS colors,
        ARRAY['cotton','steel','oak','bamboo','ceramic','glass','wool','recycled plastic'] AS materials,
        ARRAY['new','bestseller','sale','eco-friendly','gift idea','limited "edition"',
              'handmade','imported','organic','back-to-school','clearance','vegan',
              'made in EU','staff pick','fragile, handle with care','ünïcödé'] AS tag_pool,
        ARRAY['US','DE','FR','JP','CN','PT','SE','IT','VN','MX'] AS origins,
        ARRAY['🚀','🐼','🎁','⛺','🧙','☕','🌶️','👩‍🍳'] AS emoji
),
base AS (
    SELECT
        i,
        h.*,
        i % 12 AS cat_no
    FROM generate_series(1, 2000) AS i
    CROSS JOIN LATERAL (
        SELECT (hashint8extended(i, 301) & 2147483647)::int AS h1,
               (hashint8extended(i, 302) & 2147483647)::int AS h2,
               (hashint8extended(i, 303) & 2147483647)::int AS h3,
               (hashint8extended(i, 304) & 2147483647)::int AS h4,
               (hashint8extended(i, 305) & 2147483647)::int AS h5,
               (hashint8extended(i, 306) & 2147483647)::int AS h6,
               (hashint8extended(i, 307) & 2147483647)::int AS h7,
               (hashint8extended(i, 308) & 2147483647)::int AS h8
    ) AS h
),
priced AS (
    SELECT b.*, k.category, k.items,
           (((1 + b.h1 % 150) * k.price_mult)::numeric - 0.01
             + CASE WHEN b.h2 % 10 = 0 THEN (b.h2 % 90)::numeric / 100 ELSE 0 END
           )::numeric(12,2) AS price
    FROM base AS b
    JOIN catalog AS k USING (cat_no)
)
SELECT
    p.i,
    'SKU-' || upper(left(p.category, 3)) || '-' || lpad(p.i::text, 5, '0'),
    CASE WHEN p.h3 % 3 = 0 THEN '' ELSE w.adjectives[1 + p.h4 % 10] || ' ' END
        || p.items[1 + p.h5 % array_length(p.items, 1)]
        || CASE WHEN p.h6 % 4 = 0 THEN ' (' || w.colors[1 + p.h7 % 8] || ')' ELSE '' END
        -- a few names carry an emoji (incl. a ZWJ sequence and a variation selector)
        || CASE WHEN p.h8 % 64 = 0 THEN ' ' || w.emoji[1 + p.h1 % 8] ELSE '' END,
    p.category,
    p.price,
    CASE WHEN p.h8 % 10 = 0 THEN NULL
         ELSE round(p.price * (0.30 + (p.h8 % 35)::numeric / 100), 4) END,
    CASE WHEN p.category = 'Books' AND p.h3 % 4 = 0 THEN NULL     -- e-books
         WHEN p.h7 % 25 = 0 THEN NULL                              -- not yet weighed
         ELSE 20 + p.h6 % 5000 END,
    CASE p.h2 % 10
        WHEN 0 THEN NULL
        WHEN 1 THEN '{}'::text[]
        ELSE ARRAY(SELECT w.tag_pool[1 + (p.h5 + k * 7) % 16]
                   FROM generate_series(0, p.h4 % 3) AS k ORDER BY k)
    END,
    jsonb_build_object(
        'color', CASE WHEN p.h7 % 5 = 0 THEN NULL ELSE w.colors[1 + p.h7 % 8] END,
        'material', w.materials[1 + p.h8 % 8],
        'dimensions_cm', jsonb_build_array(round((5 + p.h1 % 600)::numeric / 10, 1),
                                           round((5 + p.h2 % 400)::numeric / 10, 1),
                                           round((1 + p.h3 % 300)::numeric / 10, 1)),
        'rating', round((10 + p.h4 % 41)::numeric / 10, 1),
        'reviews', p.h5 % 2500,
        'origin', w.origins[1 + p.h6 % 10]
    )
    || CASE p.category
           WHEN 'Electronics' THEN jsonb_build_object(
               'warranty_months', (ARRAY[12, 24, 36])[1 + p.h1 % 3],
               'voltage', '100-240V',
               'certifications', jsonb_build_array('CE', 'FCC'))
           WHEN 'Books' THEN jsonb_build_object(
               'isbn', '978' || lpad((p.h2 % 1000000000)::text, 10, '0'),
               'pages', 80 + p.h3 % 900,
               'language', (ARRAY['en','de','fr','ja','zh'])[1 + p.h4 % 5])
           WHEN 'Apparel' THEN jsonb_build_object(
               'sizes', jsonb_build_array('XS','S','M','L','XL'),
               'fit', (ARRAY['slim','regular','relaxed'])[1 + p.h5 % 3])
           WHEN 'Grocery' THEN jsonb_build_object(
               'allergens', CASE WHEN p.h6 % 2 = 0 THEN '[]'::jsonb
                                 ELSE jsonb_build_array('nuts', 'milk') END,
               'best_before_days', 90 + p.h7 % 600)
           WHEN 'Kitchen' THEN jsonb_build_object('dishwasher_safe', p.h8 % 2 = 0)
           ELSE '{}'::jsonb
       END,
    p.h3 % 12 <> 0,
    timestamptz '2024-01-01 00:00:00+00'
        - make_interval(secs => 1 + p.h7 % (3 * 365 * 86400)),
    CASE WHEN p.h3 % 12 = 0 THEN date '2024-01-01' + p.h8 % 366 END
FROM priced AS p
CROSS JOIN words AS w;

-- ---------------------------------------------------------------------------
-- orders + order_lines, in one statement: the lines are generated first, the
-- orders are built from their aggregates (so subtotal is exact), and both are
-- inserted by the same statement.
--
-- Orders are spread evenly over 2024 in id order. The last 2% are recent
-- (pending / paid / shipped); older ones are mostly delivered.
-- ---------------------------------------------------------------------------
WITH
params AS (
    SELECT current_setting('walden.scale')::int AS s,
           greatest(1, current_setting('walden.scale')::int / 5) AS c
),
o AS (
    SELECT
        i AS id,
        h.*,
        1 + h.h1 % p.c AS customer_id,
        timestamptz '2024-01-01 00:00:00+00'
            + make_interval(secs => ((i - 1)::bigint * 31536000 / p.s + h.h2 % 3600)::int) AS placed_at,
        (CASE
            WHEN (i - 1)::bigint * 100 >= 98::bigint * p.s THEN
                (ARRAY['pending','paid','paid','shipped','shipped','shipped','cancelled'])[1 + h.h3 % 7]
            WHEN h.h3 % 100 < 85 THEN 'delivered'
            WHEN h.h3 % 100 < 92 THEN 'cancelled'
            WHEN h.h3 % 100 < 96 THEN 'refunded'
            WHEN h.h3 % 100 < 98 THEN 'shipped'
            WHEN h.h3 % 100 < 99 THEN 'paid'
            ELSE 'pending'
        END)::order_status AS status,
        1 + h.h4 % 4 AS n_lines
    FROM params AS p
    CROSS JOIN LATERAL generate_series(1, p.s) AS i
    CROSS JOIN LATERAL (
        SELECT (hashint8extended(i, 401) & 2147483647)::int AS h1,
               (hashint8extended(i, 402) & 2147483647)::int AS h2,
               (hashint8extended(i, 403) & 2147483647)::int AS h3,
               (hashint8extended(i, 404) & 2147483647)::int AS h4,
               (hashint8extended(i, 405) & 2147483647)::int AS h5,
               (hashint8extended(i, 406) & 2147483647)::int AS h6,
               (hashint8extended(i, 407) & 2147483647)::int AS h7,
               (hashint8extended(i, 408) & 2147483647)::int AS h8,
               (hashint8extended(i, 409) & 2147483647)::int AS h9
    ) AS h
),
l AS (
    SELECT
        o.id AS order_id,
        ln AS line_no,
        pr.id AS product_id,
        CASE WHEN lh.q % 100 < 62 THEN 1
             WHEN lh.q % 100 < 86 THEN 2
             WHEN lh.q % 100 < 94 THEN 3
             WHEN lh.q % 100 < 98 THEN 4
             ELSE 5 + lh.q % 6
        END AS quantity,
        pr.price AS unit_price,
        pr.price_cents,
        -- 70% of lines undiscounted; the rest 10%, 15%, 20%, 12.5%, 5%, 33.33%
        (ARRAY[0.1, 0.15, 0.2, 0.125, 0.05, 0.3333, 0]::numeric(5,4)[])[1 + least(lh.d % 20, 6)] AS discount,
        (ARRAY[1000, 1500, 2000, 1250, 500, 3333, 0])[1 + least(lh.d % 20, 6)] AS discount_bp
    FROM o
    CROSS JOIN LATERAL generate_series(1, o.n_lines) AS ln
    CROSS JOIN LATERAL (
        SELECT (hashint8extended(o.id::bigint * 8 + ln, 501) & 2147483647)::int AS p,
               (hashint8extended(o.id::bigint * 8 + ln, 502) & 2147483647)::int AS q,
               (hashint8extended(o.id::bigint * 8 + ln, 503) & 2147483647)::int AS d
    ) AS lh
    -- skewed towards low product ids (a few bestsellers, a long tail):
    -- id = 1 + floor(2000 * u^2), u = p / 2^31, in exact integer arithmetic
    JOIN (SELECT id, price, (price * 100)::int AS price_cents FROM products) AS pr
      ON pr.id = 1 + ((((lh.p::bigint * lh.p) >> 31) * 2000) >> 31)::int
),
-- Money is summed in exact integers (cheaper than numeric):
-- quantity * cents * (10000 - discount_bp) is the line amount in 1e-6 units,
-- so (sum + 5000) / 10000 is round(sum(quantity * unit_price * (1 - discount)), 2)
-- in cents (round half up; all amounts are positive).
agg AS (
    SELECT order_id,
           (sum(quantity::bigint * price_cents * (10000 - discount_bp))::bigint + 5000) / 10000
               AS subtotal_cents,
           sum(quantity)::int AS n_items
    FROM l
    GROUP BY order_id
),
o2 AS (
    SELECT
        o.*,
        a.subtotal_cents,
        a.n_items,
        c.country,
        CASE WHEN o.h5 % 25 = 0 THEN NULL ELSE o.customer_id END AS shipping_address_id,
        CASE WHEN o.h6 % 100 < 8
             THEN (ARRAY['WELCOME10','SPRING24','FREESHIP','VIP-GOLD','BLACKFRIDAY24','summer_sale'])[1 + o.h7 % 6]
        END AS coupon_code,
        -- tax = round(subtotal * rate, 2), rate in basis points
        (a.subtotal_cents * CASE c.country
                                WHEN 'US' THEN  800 WHEN 'GB' THEN 2000 WHEN 'DE' THEN 1900
                                WHEN 'FR' THEN 2000 WHEN 'NL' THEN 2100 WHEN 'SE' THEN 2500
                                WHEN 'ES' THEN 2100 WHEN 'JP' THEN 1000 WHEN 'BR' THEN 1700
                                WHEN 'CA' THEN 1300 ELSE 0
                            END + 5000) / 10000 AS tax_cents
    FROM o
    JOIN agg AS a ON a.order_id = o.id
    JOIN customers AS c ON c.id = o.customer_id
),
o3 AS (
    SELECT
        o2.*,
        CASE WHEN o2.shipping_address_id IS NULL THEN 0
             WHEN o2.coupon_code = 'FREESHIP' THEN 0
             WHEN o2.subtotal_cents >= 7500 THEN 0
             WHEN o2.n_items > 3 THEN 995
             ELSE 495
        END AS shipping_fee_cents
    FROM o2
),
inserted_orders AS (
    INSERT INTO orders (id, customer_id, status, placed_at, shipping_address_id,
                        currency, subtotal, tax, shipping_fee, total, coupon_code,
                        delivery_window, shipped_at, metadata)
    SELECT
        o3.id,
        o3.customer_id,
        o3.status,
        o3.placed_at,
        o3.shipping_address_id,
        CASE o3.country
            WHEN 'GB' THEN 'GBP' WHEN 'SE' THEN 'SEK' WHEN 'BR' THEN 'BRL'
            WHEN 'CA' THEN 'CAD'
            WHEN 'DE' THEN 'EUR' WHEN 'FR' THEN 'EUR' WHEN 'NL' THEN 'EUR' WHEN 'ES' THEN 'EUR'
            ELSE 'USD'
        END,
        o3.subtotal_cents * 0.01,
        o3.tax_cents * 0.01,
        o3.shipping_fee_cents * 0.01,
        (o3.subtotal_cents + o3.tax_cents + o3.shipping_fee_cents) * 0.01,
        o3.coupon_code,
        CASE WHEN o3.shipping_address_id IS NULL OR o3.h8 % 4 = 0 THEN NULL
             ELSE (ARRAY[interval '2 days', interval '3 days 12:00:00',
                         interval '1 day 04:30:00', interval '7 days',
                         interval '36:00:00', interval '1 mon 2 days',
                         interval '00:45:00', interval '5 days'])[1 + o3.h9 % 8]
        END,
        CASE WHEN o3.status IN ('shipped', 'delivered')
             THEN o3.placed_at + make_interval(secs => 3600 + o3.h8 % (4 * 86400))
        END,
        -- JSON assembled as text and cast once: ~2x cheaper than
        -- jsonb_build_object at this row count. All spliced values are
        -- digits or constants below that need no JSON escaping.
        ('{"channel": "'
            || (ARRAY['web','web','web','ios','android','android','pos','marketplace'])[1 + o3.h9 % 8]
            || '", "items": ' || o3.n_items::text
            || ', "lines": ' || o3.n_lines::text
            || ', "gift": ' || CASE WHEN o3.h7 % 20 = 0 THEN 'true' ELSE 'false' END
            || CASE WHEN o3.h6 % 3 = 0
                    THEN ', "utm": {"source": "'
                         || (ARRAY['google','newsletter','instagram','tiktok','partner'])[1 + o3.h2 % 5]
                         || '", "medium": "' || (ARRAY['cpc','email','social'])[1 + o3.h4 % 3]
                         || '", "campaign": "spring-' || (2024 + o3.h5 % 2)::text || '"}'
                    ELSE '' END
            || CASE WHEN o3.h9 % 8 IN (3, 4, 5)
                    THEN ', "app_version": "3.' || (o3.h2 % 12)::text || '.' || (o3.h4 % 5)::text || '"'
                    ELSE '' END
            || CASE o3.h1 % 40
                   WHEN 0 THEN ', "courier_note": "Bitte beim Nachbarn abgeben"'
                   WHEN 1 THEN ', "courier_note": "置き配希望"'
                   WHEN 2 THEN ', "courier_note": "Leave at the door 🚪"'
                   WHEN 3 THEN E', "courier_note": "Ring twice, dog is \\"friendly\\""'
                   ELSE '' END
            || ', "risk": {"score": ' || (o3.h3 % 100)::text
            || ', "manual_review": ' || CASE WHEN o3.h3 % 100 >= 95 THEN 'true' ELSE 'false' END
            || '}}')::jsonb
    FROM o3
)
INSERT INTO order_lines (order_id, line_no, product_id, quantity, unit_price, discount)
SELECT order_id, line_no, product_id, quantity, unit_price, discount
FROM l;

-- ---------------------------------------------------------------------------
-- payments: a charge for every paid / shipped / delivered / refunded order,
-- a negative refund for refunded orders, and declined attempts before some.
-- ---------------------------------------------------------------------------
INSERT INTO payments (id, order_id, method, amount, paid_at, succeeded,
                      processor_response)
SELECT
    md5('walden-payment:' || o.id::text || ':' || pay.kind)::uuid,
    o.id,
    m.method,
    pay.amount,
    pay.paid_at,
    pay.kind <> 'declined',
    CASE
        WHEN m.method IN ('bank_transfer', 'gift_card') THEN NULL
        -- JSON assembled as text (see orders.metadata)
        WHEN pay.kind = 'declined' THEN
            ('{"processor": "' || m.processor
             || '", "status": "declined", "error": {"code": "payment_declined", "decline_code": "'
             || (ARRAY['insufficient_funds','do_not_honor','expired_card','incorrect_cvc'])[1 + h.h4 % 4]
             || '", "message": "Your payment was declined."}}')::jsonb
        WHEN pay.kind = 'refund' THEN
            ('{"processor": "' || m.processor
             || '", "status": "refunded", "refund_id": "re_'
             || lpad(to_hex(h.h2), 8, '0') || lpad(to_hex(h.h3), 8, '0')
             || '", "reason": "'
             || (ARRAY['requested_by_customer','damaged','not_as_described'])[1 + h.h5 % 3]
             || '"}')::jsonb
        ELSE
            ('{"processor": "' || m.processor
             || '", "status": "captured", "auth_code": "' || upper(lpad(to_hex(h.h6 % 16777216), 6, '0'))
             || '", "avs": ' || CASE WHEN h.h4 % 10 = 0 THEN 'null'
                                     ELSE '"' || (ARRAY['Y','Y','Y','N','P'])[1 + h.h4 % 5] || '"' END
             || ', "risk_score": ' || (h.h5 % 100)::text
             || ', "card": '
             || CASE WHEN m.method = 'card'
                     THEN '{"brand": "' || (ARRAY['visa','visa','mastercard','amex','discover'])[1 + h.h2 % 5]
                          || '", "last4": "' || lpad((h.h3 % 10000)::text, 4, '0')
                          || '", "exp_month": ' || (1 + h.h4 % 12)::text
                          || ', "exp_year": ' || (2025 + h.h5 % 6)::text
                          || ', "three_d_secure": ' || CASE WHEN h.h2 % 3 = 0 THEN 'true' ELSE 'false' END
                          || '}'
                     ELSE 'null' END
             || '}')::jsonb
    END
FROM orders AS o
CROSS JOIN LATERAL (
    SELECT (hashint8extended(o.id, 601) & 2147483647)::int AS h1,
           (hashint8extended(o.id, 602) & 2147483647)::int AS h2,
           (hashint8extended(o.id, 603) & 2147483647)::int AS h3,
           (hashint8extended(o.id, 604) & 2147483647)::int AS h4,
           (hashint8extended(o.id, 605) & 2147483647)::int AS h5,
           (hashint8extended(o.id, 606) & 2147483647)::int AS h6
) AS h
CROSS JOIN LATERAL (
    SELECT x.method,
           CASE x.method WHEN 'paypal' THEN 'paypal' WHEN 'apple_pay' THEN 'adyen'
                         ELSE 'stripe' END AS processor
    FROM (SELECT (ARRAY['card','card','card','card','card','card','card','card',
                        'card','card','card','card','card','paypal','paypal','paypal',
                        'apple_pay','apple_pay','bank_transfer','gift_card'])[1 + h.h1 % 20]
                 AS method) AS x
) AS m
CROSS JOIN LATERAL (
    VALUES
    ('declined',
     CASE WHEN o.status = 'cancelled' THEN h.h6 % 3 = 0 ELSE h.h6 % 25 = 0 END,
     o.total,
     o.placed_at + make_interval(secs => 5 + h.h2 % 60)),
    ('charge',
     o.status IN ('paid', 'shipped', 'delivered', 'refunded'),
     o.total,
     o.placed_at + make_interval(secs => 90 + h.h3 % 1800)),
    ('refund',
     o.status = 'refunded',
     -o.total,
     o.placed_at + make_interval(secs => 3 * 86400 + h.h4 % (20 * 86400)))
) AS pay (kind, included, amount, paid_at)
WHERE pay.included;

-- ---------------------------------------------------------------------------
-- Move identity sequences past the loaded ids (for later live inserts), and
-- refresh planner statistics.
-- ---------------------------------------------------------------------------
SELECT setval(pg_get_serial_sequence('customers', 'id'), (SELECT max(id) FROM customers)),
       setval(pg_get_serial_sequence('addresses', 'id'), (SELECT max(id) FROM addresses)),
       setval(pg_get_serial_sequence('products',  'id'), (SELECT max(id) FROM products)),
       setval(pg_get_serial_sequence('orders',    'id'), (SELECT max(id) FROM orders));

-- Re-create the keys, indexes and foreign keys dropped above (keys first).
DO $$
DECLARE
    d record;
BEGIN
    FOR d IN SELECT * FROM json_to_recordset(current_setting('walden.shop_deferred_ddl')::json)
                        AS x(step int, name text, drop_sql text, create_sql text)
             ORDER BY step, name
    LOOP
        EXECUTE d.create_sql;
    END LOOP;
END
$$;

ANALYZE customers, addresses, products, orders, order_lines, payments;
