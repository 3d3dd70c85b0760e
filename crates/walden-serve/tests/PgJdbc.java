import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.Statement;

/** The JDBC driver against walden's pgwire front end; prints one line per result. */
public class PgJdbc {
    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/walden?sslmode=disable";
        try (Connection c = DriverManager.getConnection(url, "alice", "alice-secret")) {
            DatabaseMetaData md = c.getMetaData();
            try (ResultSet rs = md.getTables(null, "public", "%", new String[] {"TABLE"})) {
                while (rs.next()) {
                    System.out.println("table " + rs.getString("TABLE_SCHEM") + "." + rs.getString("TABLE_NAME"));
                }
            }
            try (ResultSet rs = md.getColumns(null, "public", "orders", "%")) {
                while (rs.next()) {
                    System.out.println("column " + rs.getString("COLUMN_NAME") + " "
                            + rs.getString("TYPE_NAME") + " " + rs.getInt("DATA_TYPE"));
                }
            }
            // Six executions: past prepareThreshold (5) the driver uses a named server statement.
            try (PreparedStatement ps =
                    c.prepareStatement("SELECT customer, amount FROM public.orders WHERE id = ?")) {
                for (long id = 4; id <= 9; id++) {
                    ps.setLong(1, id);
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        System.out.println("prepared " + id + " " + rs.getString(1) + " " + rs.getBigDecimal(2));
                    }
                }
            }
            c.setAutoCommit(false);
            try (Statement s = c.createStatement()) {
                s.setFetchSize(6);
                try (ResultSet rs = s.executeQuery("SELECT id, placed_at FROM public.orders ORDER BY id")) {
                    int n = 0;
                    long sum = 0;
                    while (rs.next()) {
                        n++;
                        sum += rs.getLong(1);
                    }
                    System.out.println("fetched " + n + " " + sum);
                }
            }
            c.commit();
        }
    }
}
