-- walden quickstart: one "tick" of live traffic on the demo shop.
--
-- Runs repeatedly (a few times a second) against the database built by
-- shop_schema.sql + shop_data.sql, each time as one simple-query batch (e.g.
-- tokio-postgres `batch_execute`). No psql meta-commands and no settings are
-- needed. The whole tick is a single DO block, i.e. a single statement, so it
-- is atomic on its own: if anything fails the tick rolls back and the session
-- is left clean (no open or aborted transaction) for the next one.
--
-- One tick, using random() (not deterministic, unlike the data script):
--   * places 1-3 orders for random existing customers: 1-4 lines each of
--     active products at their current price, priced exactly like
--     shop_data.sql (subtotal = round(sum(qty * unit_price * (1 - discount)), 2),
--     tax by country, shipping fee rules, currency by country), 'pending';
--   * moves recent orders along their lifecycle, 1-3 per step:
--     pending -> paid (with a payments row: the charge, sometimes preceded by
--     a declined attempt), paid -> shipped (shipped_at set),
--     shipped -> delivered (the customer earns loyalty points);
--     ~1 tick in 10 cancels a pending order, ~1 in 25 refunds a paid one
--     (status 'refunded' + a negative refund payment);
--   * ~1 tick in 5 changes the price of a random product;
--   * ~1 tick in 10 a random customer redeems loyalty points;
--   * ~1 tick in 10 a new customer signs up (with a shipping address), and
--     ~1 tick in 40 a customer without orders is deleted (addresses first),
--     so inserts, updates and deletes all flow.
--
-- Every statement touches a handful of rows found through the primary keys
-- (random ids are drawn into variables first, so the lookups are index
-- scans; lifecycle steps only look at the newest 2000 orders), so a tick costs
-- about the same on any scale. Invariants of shop_data.sql are kept:
--     orders.total = subtotal + tax + shipping_fee
--     orders.subtotal = round(sum(quantity * unit_price * (1 - discount)), 2)
--     orders.shipped_at IS NOT NULL  <=>  status IN ('shipped', 'delivered')
-- Orders that leave that window unfinished simply stay as they are (like the
-- old pending / paid / shipped orders of the data script).
--
-- Ticks are meant to run one at a time (one connection, sequentially); two
-- concurrent ticks could conflict (e.g. an order for a customer being
-- deleted) and one of them would then fail and roll back.

DO $tick$
DECLARE
    -- lifecycle steps only consider the newest orders, to stay cheap
    c_window     constant bigint := 2000;

    v_max_cust   bigint;
    v_max_prod   bigint;
    v_max_order  bigint;
    v_start      bigint;
    v_n          int;

    -- order placement
    v_cust_id    bigint;
    v_country    text;
    v_addr_id    bigint;
    v_order_id   bigint;
    v_prods      int[];
    v_qtys       int[];
    v_prices     numeric(12,2)[];
    v_discs      numeric(5,4)[];
    v_pid        int;
    v_price      numeric(12,2);
    v_qty        int;
    v_disc       numeric(5,4);
    v_r          float8;
    v_subtotal   numeric(12,2);
    v_tax        numeric(12,2);
    v_fee        numeric(10,2);
    v_items      int;
    v_coupon     text;
    v_risk       int;

    -- payments
    v_id         bigint;
    v_total      numeric(12,2);
    v_method     text;
    v_processor  text;

    -- customers
    v_new_id     bigint;
    v_city       text;
    v_line1      text;
    v_postal     text;
BEGIN
    SELECT max(id) INTO v_max_cust FROM customers;
    SELECT max(id) INTO v_max_prod FROM products;

    -- -----------------------------------------------------------------------
    -- 1. new orders
    -- -----------------------------------------------------------------------
    IF v_max_cust IS NOT NULL AND v_max_prod IS NOT NULL THEN
        FOR v_i IN 1 .. 1 + floor(random() * 3)::int LOOP
            -- a random customer (first existing id at or after a random one)
            v_start := 1 + floor(random() * v_max_cust)::bigint;
            SELECT id, country INTO v_cust_id, v_country
            FROM customers WHERE id >= v_start ORDER BY id LIMIT 1;
            IF v_cust_id IS NULL THEN
                SELECT id, country INTO v_cust_id, v_country
                FROM customers ORDER BY id LIMIT 1;
            END IF;
            EXIT WHEN v_cust_id IS NULL;

            -- their default shipping address; ~4% have none (pick-up / digital)
            v_addr_id := NULL;
            IF random() >= 0.04 THEN
                SELECT id INTO v_addr_id
                FROM addresses
                WHERE customer_id = v_cust_id AND kind = 'shipping'
                ORDER BY is_default DESC, id
                LIMIT 1;
            END IF;

            -- 1-4 lines of active products at their current price, skewed
            -- towards low product ids like the data script
            v_prods := '{}'; v_qtys := '{}'; v_prices := '{}'; v_discs := '{}';
            FOR v_j IN 1 .. 1 + floor(random() * 4)::int LOOP
                v_r := random();
                v_start := 1 + floor(v_max_prod * v_r * v_r)::bigint;
                SELECT id, price INTO v_pid, v_price
                FROM products WHERE active AND id >= v_start ORDER BY id LIMIT 1;
                IF v_pid IS NULL THEN
                    SELECT id, price INTO v_pid, v_price
                    FROM products WHERE active ORDER BY id LIMIT 1;
                END IF;
                EXIT WHEN v_pid IS NULL;

                v_r := random() * 100;
                v_qty := CASE WHEN v_r < 62 THEN 1
                              WHEN v_r < 86 THEN 2
                              WHEN v_r < 94 THEN 3
                              WHEN v_r < 98 THEN 4
                              ELSE 5 + floor(random() * 6)::int
                         END;
                -- 70% of lines undiscounted, the rest as in the data script
                v_disc := (ARRAY[0.1, 0.15, 0.2, 0.125, 0.05, 0.3333, 0, 0, 0, 0,
                                 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]::numeric(5,4)[])
                          [1 + floor(random() * 20)::int];

                v_prods  := v_prods  || v_pid;
                v_qtys   := v_qtys   || v_qty;
                v_prices := v_prices || v_price;
                v_discs  := v_discs  || v_disc;
            END LOOP;
            CONTINUE WHEN cardinality(v_prods) = 0;

            SELECT round(sum(q * p * (1 - d)), 2), sum(q)
            INTO v_subtotal, v_items
            FROM unnest(v_qtys, v_prices, v_discs) AS x (q, p, d);

            v_tax := round(v_subtotal * CASE v_country
                                            WHEN 'US' THEN  800 WHEN 'GB' THEN 2000
                                            WHEN 'DE' THEN 1900 WHEN 'FR' THEN 2000
                                            WHEN 'NL' THEN 2100 WHEN 'SE' THEN 2500
                                            WHEN 'ES' THEN 2100 WHEN 'JP' THEN 1000
                                            WHEN 'BR' THEN 1700 WHEN 'CA' THEN 1300
                                            ELSE 0
                                        END / 10000, 2);
            v_coupon := CASE WHEN random() < 0.08
                             THEN (ARRAY['WELCOME10','SPRING24','FREESHIP','VIP-GOLD',
                                         'BLACKFRIDAY24','summer_sale'])[1 + floor(random() * 6)::int]
                        END;
            v_fee := CASE WHEN v_addr_id IS NULL THEN 0
                          WHEN v_coupon = 'FREESHIP' THEN 0
                          WHEN v_subtotal >= 75 THEN 0
                          WHEN v_items > 3 THEN 9.95
                          ELSE 4.95
                     END;
            v_risk := floor(random() * 100)::int;

            INSERT INTO orders (customer_id, status, placed_at, shipping_address_id,
                                currency, subtotal, tax, shipping_fee, total,
                                coupon_code, delivery_window, metadata)
            VALUES (
                v_cust_id,
                'pending',
                now(),
                v_addr_id,
                CASE v_country
                    WHEN 'GB' THEN 'GBP' WHEN 'SE' THEN 'SEK' WHEN 'BR' THEN 'BRL'
                    WHEN 'CA' THEN 'CAD'
                    WHEN 'DE' THEN 'EUR' WHEN 'FR' THEN 'EUR' WHEN 'NL' THEN 'EUR'
                    WHEN 'ES' THEN 'EUR'
                    ELSE 'USD'
                END,
                v_subtotal,
                v_tax,
                v_fee,
                v_subtotal + v_tax + v_fee,
                v_coupon,
                CASE WHEN v_addr_id IS NULL OR random() < 0.25 THEN NULL
                     ELSE (ARRAY[interval '2 days', interval '3 days 12:00:00',
                                 interval '1 day 04:30:00', interval '7 days',
                                 interval '36:00:00', interval '5 days'])[1 + floor(random() * 6)::int]
                END,
                jsonb_build_object(
                    'channel', (ARRAY['web','web','web','ios','android','android',
                                      'pos','marketplace'])[1 + floor(random() * 8)::int],
                    'items', v_items,
                    'lines', cardinality(v_prods),
                    'gift', random() < 0.05,
                    'risk', jsonb_build_object('score', v_risk,
                                               'manual_review', v_risk >= 95))
            )
            RETURNING id INTO v_order_id;

            INSERT INTO order_lines (order_id, line_no, product_id, quantity,
                                     unit_price, discount)
            SELECT v_order_id, x.n, x.p, x.q, x.price, x.d
            FROM unnest(v_prods, v_qtys, v_prices, v_discs)
                 WITH ORDINALITY AS x (p, q, price, d, n);
        END LOOP;
    END IF;

    -- -----------------------------------------------------------------------
    -- 2. lifecycle of recent orders. Each step scans forward from a random
    --    id among the newest c_window orders; orders placed in this very tick
    --    (placed_at = now()) are left alone.
    -- -----------------------------------------------------------------------
    SELECT max(id) INTO v_max_order FROM orders;

    IF v_max_order IS NOT NULL THEN
        -- pending -> paid, with the charge (sometimes after a declined attempt)
        v_start := greatest(1, v_max_order - floor(random() * c_window)::bigint);
        v_n := 1 + floor(random() * 3)::int;
        FOR v_id, v_total IN
            SELECT id, total FROM orders
            WHERE id >= v_start AND status = 'pending' AND placed_at < now()
            ORDER BY id LIMIT v_n
        LOOP
            UPDATE orders SET status = 'paid' WHERE id = v_id;

            v_method := (ARRAY['card','card','card','card','card','card','card',
                               'card','card','card','card','card','card','paypal',
                               'paypal','paypal','apple_pay','apple_pay',
                               'bank_transfer','gift_card'])[1 + floor(random() * 20)::int];
            v_processor := CASE v_method WHEN 'paypal' THEN 'paypal'
                                         WHEN 'apple_pay' THEN 'adyen'
                                         ELSE 'stripe' END;

            IF random() < 0.04 AND v_method NOT IN ('bank_transfer', 'gift_card') THEN
                INSERT INTO payments (order_id, method, amount, paid_at, succeeded,
                                      processor_response)
                VALUES (v_id, v_method, v_total, now() - interval '20 seconds', false,
                        jsonb_build_object(
                            'processor', v_processor,
                            'status', 'declined',
                            'error', jsonb_build_object(
                                'code', 'payment_declined',
                                'decline_code', (ARRAY['insufficient_funds','do_not_honor',
                                                       'expired_card','incorrect_cvc'])
                                                [1 + floor(random() * 4)::int],
                                'message', 'Your payment was declined.')));
            END IF;

            INSERT INTO payments (order_id, method, amount, paid_at, succeeded,
                                  processor_response)
            VALUES (v_id, v_method, v_total, now(), true,
                    CASE WHEN v_method IN ('bank_transfer', 'gift_card') THEN NULL
                    ELSE jsonb_build_object(
                        'processor', v_processor,
                        'status', 'captured',
                        'auth_code', upper(lpad(to_hex(floor(random() * 16777216)::int), 6, '0')),
                        'avs', CASE WHEN random() < 0.1 THEN NULL
                                    ELSE (ARRAY['Y','Y','Y','N','P'])[1 + floor(random() * 5)::int] END,
                        'risk_score', floor(random() * 100)::int,
                        'card', CASE WHEN v_method = 'card' THEN jsonb_build_object(
                                    'brand', (ARRAY['visa','visa','mastercard','amex','discover'])
                                             [1 + floor(random() * 5)::int],
                                    'last4', lpad(floor(random() * 10000)::int::text, 4, '0'),
                                    'exp_month', 1 + floor(random() * 12)::int,
                                    'exp_year', 2026 + floor(random() * 6)::int,
                                    'three_d_secure', random() < 0.33) END)
                    END);
        END LOOP;

        -- paid -> shipped
        v_start := greatest(1, v_max_order - floor(random() * c_window)::bigint);
        v_n := 1 + floor(random() * 3)::int;
        UPDATE orders SET status = 'shipped', shipped_at = now()
        WHERE id IN (SELECT id FROM orders
                     WHERE id >= v_start AND status = 'paid'
                     ORDER BY id LIMIT v_n);

        -- shipped -> delivered; the customer earns a point per whole unit spent
        v_start := greatest(1, v_max_order - floor(random() * c_window)::bigint);
        v_n := 1 + floor(random() * 3)::int;
        WITH delivered AS (
            UPDATE orders SET status = 'delivered'
            WHERE id IN (SELECT id FROM orders
                         WHERE id >= v_start AND status = 'shipped'
                         ORDER BY id LIMIT v_n)
            RETURNING customer_id, subtotal
        )
        UPDATE customers AS c
        SET loyalty_points = least(c.loyalty_points::bigint + d.points, 2147483647)::int
        FROM (SELECT customer_id, sum(floor(subtotal))::bigint AS points
              FROM delivered GROUP BY customer_id) AS d
        WHERE c.id = d.customer_id AND d.points > 0;

        -- now and then a pending order is cancelled
        IF random() < 0.1 THEN
            v_start := greatest(1, v_max_order - floor(random() * c_window)::bigint);
            UPDATE orders SET status = 'cancelled'
            WHERE id = (SELECT id FROM orders
                        WHERE id >= v_start AND status = 'pending' AND placed_at < now()
                        ORDER BY id LIMIT 1);
        END IF;

        -- rarely a paid (not yet shipped) order is refunded
        IF random() < 0.04 THEN
            v_start := greatest(1, v_max_order - floor(random() * c_window)::bigint);
            v_id := NULL;
            UPDATE orders SET status = 'refunded'
            WHERE id = (SELECT id FROM orders
                        WHERE id >= v_start AND status = 'paid'
                        ORDER BY id LIMIT 1)
            RETURNING id, total INTO v_id, v_total;
            IF v_id IS NOT NULL THEN
                v_method := NULL;
                SELECT method INTO v_method
                FROM payments
                WHERE order_id = v_id AND succeeded AND amount >= 0
                ORDER BY paid_at DESC
                LIMIT 1;
                v_method := coalesce(v_method, 'card');
                INSERT INTO payments (order_id, method, amount, paid_at, succeeded,
                                      processor_response)
                VALUES (v_id, v_method, -v_total, now(), true,
                        CASE WHEN v_method IN ('bank_transfer', 'gift_card') THEN NULL
                        ELSE jsonb_build_object(
                            'processor', CASE v_method WHEN 'paypal' THEN 'paypal'
                                                       WHEN 'apple_pay' THEN 'adyen'
                                                       ELSE 'stripe' END,
                            'status', 'refunded',
                            'refund_id', 're_' || md5(random()::text)::varchar(16),
                            'reason', (ARRAY['requested_by_customer','damaged',
                                             'not_as_described'])[1 + floor(random() * 3)::int])
                        END);
            END IF;
        END IF;
    END IF;

    -- -----------------------------------------------------------------------
    -- 3. a price change (~1 tick in 5), kept within [0.99, 99999.99]
    -- -----------------------------------------------------------------------
    IF v_max_prod IS NOT NULL AND random() < 0.2 THEN
        v_start := 1 + floor(random() * v_max_prod)::bigint;
        UPDATE products
        SET price = least(99999.99, greatest(0.99, round(price * (0.85 + random() * 0.3)::numeric, 2)))
        WHERE id = (SELECT id FROM products WHERE id >= v_start ORDER BY id LIMIT 1);
    END IF;

    -- -----------------------------------------------------------------------
    -- 4. customers
    -- -----------------------------------------------------------------------
    -- a random customer redeems some loyalty points (~1 tick in 10)
    IF v_max_cust IS NOT NULL AND random() < 0.1 THEN
        v_start := 1 + floor(random() * v_max_cust)::bigint;
        UPDATE customers
        SET loyalty_points = loyalty_points - least(loyalty_points, 100 * (1 + floor(random() * 10)::int))
        WHERE id = (SELECT id FROM customers WHERE id >= v_start ORDER BY id LIMIT 1)
          AND loyalty_points > 0;
    END IF;

    -- a new customer signs up (~1 tick in 10), moving into the building of a
    -- random existing address (so city / postal code match the country)
    IF random() < 0.1 THEN
        v_start := 1 + floor(random() * coalesce((SELECT max(id) FROM addresses), 0))::bigint;
        SELECT country, city, line1, postal_code INTO v_country, v_city, v_line1, v_postal
        FROM addresses WHERE id >= v_start ORDER BY id LIMIT 1;
        IF v_country IS NOT NULL THEN
            v_new_id := nextval(pg_get_serial_sequence('customers', 'id'));
            INSERT INTO customers (id, email, full_name, country, created_at,
                                   marketing_opt_in, loyalty_points, preferences)
            VALUES (
                v_new_id,
                -- unique: the data script's emails are first.last.<id>@...
                'signup.' || v_new_id || '@example.com',
                (ARRAY['Olivia','Liam','Emma','Noah','Zoë','Søren','Łukasz','Chloé',
                       'Mateo','Yuki','Priya','Omar','Ingrid','Tomás'])[1 + floor(random() * 14)::int]
                    || ' ' ||
                (ARRAY['Smith','Müller','García','O''Brien','Nguyễn','Tanaka','Kowalski',
                       'Dubois','Silva','Jensen','Peña','Walsh'])[1 + floor(random() * 12)::int],
                v_country,
                now(),
                random() < 0.33,
                0,
                jsonb_build_object('language', 'en', 'newsletter', random() < 0.33,
                                   'signup', 'live'))
            ON CONFLICT DO NOTHING
            RETURNING id INTO v_new_id;
            IF FOUND THEN
                INSERT INTO addresses (customer_id, kind, line1, city, postal_code,
                                       country, is_default)
                VALUES (v_new_id, 'shipping',
                        v_line1 || ', Apt ' || (1 + floor(random() * 40)::int)::text,
                        v_city, v_postal, v_country, true);
            END IF;
        END IF;
    END IF;

    -- a customer without orders is deleted (~1 tick in 40), addresses first;
    -- nothing happens if the probe finds none
    IF v_max_cust IS NOT NULL AND random() < 0.025 THEN
        v_start := 1 + floor(random() * v_max_cust)::bigint;
        v_cust_id := NULL;
        SELECT c.id INTO v_cust_id
        FROM customers AS c
        WHERE c.id >= v_start AND c.id < v_start + 5000
          AND NOT EXISTS (SELECT 1 FROM orders AS o WHERE o.customer_id = c.id)
          AND NOT EXISTS (SELECT 1 FROM addresses AS a
                          JOIN orders AS o ON o.shipping_address_id = a.id
                          WHERE a.customer_id = c.id)
        ORDER BY c.id
        LIMIT 1
        FOR UPDATE;
        IF v_cust_id IS NOT NULL THEN
            DELETE FROM addresses WHERE customer_id = v_cust_id;
            DELETE FROM customers WHERE id = v_cust_id;
        END IF;
    END IF;
END
$tick$;
