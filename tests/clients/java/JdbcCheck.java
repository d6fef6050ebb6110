import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;

/**
 * pgJDBC driven through Sekisho (or directly, for comparison): prints one line per observation.
 *
 * <p>Usage: java -cp postgresql.jar:DIR JdbcCheck JDBC_URL. The test runs this against Sekisho and
 * against the upstream and compares the two outputs line for line, so nothing printed here may depend
 * on which server answered (no backend pids, no user names, no timings).
 */
public final class JdbcCheck {
    private JdbcCheck() {}

    public static void main(String[] args) throws SQLException {
        try (Connection conn = DriverManager.getConnection(args[0])) {
            simpleStatement(conn);
            preparedRepeated(conn);
            fetchSizeCursor(conn);
            errorInTransaction(conn);
            metadata(conn);
            batch(conn);
        }
        System.out.println("done");
    }

    private static void simpleStatement(Connection conn) throws SQLException {
        try (Statement st = conn.createStatement();
                ResultSet rs = st.executeQuery("SELECT count(*), min(id), max(id) FROM customers")) {
            rs.next();
            System.out.println("count " + rs.getLong(1) + " " + rs.getLong(2) + " " + rs.getLong(3));
        }
    }

    /** Past prepareThreshold (5) pgJDBC switches to a named server-side statement (S_n). */
    private static void preparedRepeated(Connection conn) throws SQLException {
        String sql = "SELECT id, name, email, created_at, card_number FROM customers WHERE id = ? OR id = ? ORDER BY id";
        try (PreparedStatement ps = conn.prepareStatement(sql)) {
            for (int i = 1; i <= 12; i++) {
                ps.setLong(1, i);
                ps.setLong(2, 2001 - i);
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) {
                        System.out.println("prepared " + i + " " + row(rs));
                    }
                }
            }
        }
        try (Statement st = conn.createStatement();
                ResultSet rs = st.executeQuery(
                        "SELECT count(*) FROM pg_prepared_statements WHERE NOT from_sql AND statement LIKE '%WHERE id = $1 OR id = $2%'")) {
            rs.next();
            System.out.println("server-side prepared statements " + rs.getLong(1));
        }
    }

    /** With autocommit off and a fetch size, pgJDBC reads a portal 100 rows per Execute. */
    private static void fetchSizeCursor(Connection conn) throws SQLException {
        conn.setAutoCommit(false);
        long rows = 0;
        try (PreparedStatement ps = conn.prepareStatement("SELECT * FROM customers WHERE id > ? ORDER BY id")) {
            ps.setFetchSize(100);
            ps.setLong(1, 0);
            try (ResultSet rs = ps.executeQuery()) {
                while (rs.next()) {
                    rows++;
                    System.out.println("cursor " + row(rs));
                }
            }
        }
        try (Statement st = conn.createStatement()) {
            st.setFetchSize(250);
            try (ResultSet rs = st.executeQuery("SELECT id, customer_id FROM orders ORDER BY id")) {
                long sum = 0;
                long n = 0;
                while (rs.next()) {
                    sum += rs.getLong(1) * 7 + rs.getLong(2);
                    n++;
                }
                System.out.println("orders cursor " + n + " " + sum);
            }
        }
        conn.commit();
        conn.setAutoCommit(true);
        System.out.println("cursor rows " + rows);
    }

    private static void errorInTransaction(Connection conn) throws SQLException {
        conn.setAutoCommit(false);
        try (Statement st = conn.createStatement()) {
            st.execute("SELECT 1");
            try {
                st.execute("SELECT 1 / 0");
            } catch (SQLException e) {
                System.out.println("error " + e.getSQLState() + " " + e.getMessage());
            }
            try {
                st.execute("SELECT 2");
            } catch (SQLException e) {
                System.out.println("error " + e.getSQLState() + " " + e.getMessage());
            }
            conn.rollback();
            try (ResultSet rs = st.executeQuery("SELECT 3")) {
                rs.next();
                System.out.println("after rollback " + rs.getInt(1));
            }
        }
        conn.setAutoCommit(true);
    }

    private static void metadata(Connection conn) throws SQLException {
        DatabaseMetaData meta = conn.getMetaData();
        System.out.println("product " + meta.getDatabaseProductName() + " " + meta.getDatabaseMajorVersion());
        try (ResultSet rs = meta.getTables(null, "public", "%", new String[] {"TABLE"})) {
            while (rs.next()) {
                System.out.println("table " + rs.getString("TABLE_SCHEM") + "." + rs.getString("TABLE_NAME")
                        + " " + rs.getString("TABLE_TYPE"));
            }
        }
        try (ResultSet rs = meta.getColumns(null, "public", "customers", "%")) {
            while (rs.next()) {
                System.out.println("column " + rs.getString("COLUMN_NAME") + " " + rs.getString("TYPE_NAME")
                        + " " + rs.getString("IS_NULLABLE"));
            }
        }
        try (ResultSet rs = meta.getPrimaryKeys(null, "public", "customers")) {
            while (rs.next()) {
                System.out.println("primary key " + rs.getString("COLUMN_NAME"));
            }
        }
    }

    private static void batch(Connection conn) throws SQLException {
        try (Statement st = conn.createStatement()) {
            st.execute("CREATE TEMP TABLE jdbc_batch (id bigint, label text)");
        }
        try (PreparedStatement ps = conn.prepareStatement("INSERT INTO jdbc_batch VALUES (?, ?)")) {
            for (int i = 0; i < 50; i++) {
                ps.setLong(1, i);
                ps.setString(2, "label " + i);
                ps.addBatch();
            }
            int total = 0;
            for (int n : ps.executeBatch()) {
                total += n;
            }
            System.out.println("batch inserted " + total);
        }
        try (Statement st = conn.createStatement();
                ResultSet rs = st.executeQuery("SELECT count(*), sum(id), string_agg(label, ',' ORDER BY id) FROM jdbc_batch")) {
            rs.next();
            System.out.println("batch " + rs.getLong(1) + " " + rs.getLong(2) + " " + rs.getString(3).length());
        }
    }

    private static String row(ResultSet rs) throws SQLException {
        ResultSetMetaData md = rs.getMetaData();
        StringBuilder out = new StringBuilder();
        for (int c = 1; c <= md.getColumnCount(); c++) {
            if (c > 1) {
                out.append('|');
            }
            out.append(md.getColumnName(c)).append('=').append(rs.getString(c));
        }
        return out.toString();
    }
}
