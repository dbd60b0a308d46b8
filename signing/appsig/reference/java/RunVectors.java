import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Base64;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Runs pushgate's app-signature test vectors through {@link PushgateVerifier}:
 *
 * <pre>
 * javac -d /tmp/pushgate-java PushgateVerifier.java RunVectors.java
 * java -cp /tmp/pushgate-java RunVectors ../../testdata/vectors.json
 * </pre>
 *
 * <p>Each case replays its history, then verifies and admits its push; the
 * verdict must be the case's, and a push that verifies must have the case's
 * canonical bytes. It prints one line per case that disagrees and exits 1 if
 * any does (2 when it cannot read the file); otherwise it prints
 * "N vectors passed".
 */
public final class RunVectors {
    private RunVectors() {}

    public static void main(String[] args) {
        int status = run(args);
        System.out.flush();
        System.exit(status);
    }

    /** A vector file that is not shaped as expected. */
    private static final class ShapeException extends Exception {
        private static final long serialVersionUID = 1L;

        ShapeException(String message) {
            super(message);
        }
    }

    private static int run(String[] args) {
        if (args.length != 1) {
            System.err.println("usage: java -cp DIR RunVectors VECTORS.json");
            return 2;
        }
        PushgateVerifier.Json.JsonObject vectors;
        Map<String, byte[]> keys = new HashMap<>();
        PushgateVerifier.Device device;
        long now;
        List<Object> cases;
        try {
            vectors = object(PushgateVerifier.Json.parse(Files.readString(Path.of(args[0]))), "the file");
            for (Map.Entry<String, Object> key : object(vectors.get("keys"), "keys").members()) {
                keys.put(key.getKey(), Base64.getUrlDecoder().decode(string(key.getValue(), "a key")));
            }
            now = integer(vectors.get("now"), "now");
            PushgateVerifier.Json.JsonObject dev = object(vectors.get("device"), "device");
            List<String> topics = new ArrayList<>();
            for (Object t : list(dev.get("topics"), "device topics")) {
                topics.add(string(t, "a topic"));
            }
            device = new PushgateVerifier.Device(string(dev.get("token"), "device token"), topics);
            cases = list(vectors.get("cases"), "cases");
        } catch (IOException | PushgateVerifier.Json.SyntaxException | ShapeException | IllegalArgumentException e) {
            System.err.println("RunVectors: " + args[0] + ": " + e.getMessage());
            return 2;
        }
        if (cases.isEmpty()) {
            System.out.println("no vectors in the file");
            return 1;
        }
        int failed = 0;
        for (Object c : cases) {
            String name = "?";
            String problem;
            try {
                PushgateVerifier.Json.JsonObject vector = object(c, "a case");
                name = string(vector.get("name"), "a case name");
                problem = disagreement(vector, keys, device, now);
            } catch (ShapeException e) {
                problem = "bad case: " + e.getMessage();
            }
            if (!problem.isEmpty()) {
                failed++;
                System.out.println("FAIL " + name + ": " + problem);
            }
        }
        if (failed > 0) {
            System.out.println(failed + " of " + cases.size() + " vectors failed");
            return 1;
        }
        System.out.println(cases.size() + " vectors passed");
        return 0;
    }

    /** Runs one case and returns how it disagrees with the vector, or "". */
    private static String disagreement(PushgateVerifier.Json.JsonObject vector, Map<String, byte[]> keys,
            PushgateVerifier.Device device, long now) throws ShapeException {
        String want = string(vector.get("want"), "want");
        PushgateVerifier.History history = new PushgateVerifier.History();
        if (vector.has("history")) {
            for (Object s : list(vector.get("history"), "history")) {
                PushgateVerifier.Json.JsonObject seen = object(s, "a history entry");
                PushgateVerifier.Kind kind = PushgateVerifier.Kind.of(string(seen.get("kind"), "a history kind"));
                if (kind == null) {
                    throw new ShapeException("unknown history kind");
                }
                try {
                    history.admit(new PushgateVerifier.Claims(null, kind, string(seen.get("broadcast"), "a history broadcast"),
                            null, 0, null, null, null, null));
                } catch (PushgateVerifier.Refusal r) {
                    return "history: " + r.getMessage();
                }
            }
        }
        PushgateVerifier.Json.JsonObject push = object(vector.get("push"), "push");
        Map<String, String> data = new LinkedHashMap<>();
        for (Map.Entry<String, Object> pair : object(push.get("data"), "push data").members()) {
            data.put(pair.getKey(), string(pair.getValue(), "a data value"));
        }
        String title = push.has("title") ? string(push.get("title"), "title") : "";
        String body = push.has("body") ? string(push.get("body"), "body") : "";

        String got = "ok";
        String why = "";
        PushgateVerifier.Claims claims = null;
        try {
            claims = PushgateVerifier.verify(keys, device, title, body, data, now);
            history.admit(claims);
        } catch (PushgateVerifier.Refusal r) {
            got = r.getCode();
            why = " (" + r.getMessage() + ")";
        } catch (RuntimeException e) {
            return "threw " + e + ", want " + want;
        }
        if (!got.equals(want)) {
            return "got " + got + why + ", want " + want;
        }
        if (got.equals("ok")) {
            String canonical = vector.has("canonical") ? string(vector.get("canonical"), "canonical") : "";
            if (!Base64.getEncoder().encodeToString(PushgateVerifier.canonicalEncode(claims)).equals(canonical)) {
                return "canonical bytes differ";
            }
        }
        return "";
    }

    private static PushgateVerifier.Json.JsonObject object(Object v, String what) throws ShapeException {
        if (v instanceof PushgateVerifier.Json.JsonObject o) {
            return o;
        }
        throw new ShapeException(what + " is not an object");
    }

    @SuppressWarnings("unchecked")
    private static List<Object> list(Object v, String what) throws ShapeException {
        if (v instanceof List<?> l) {
            return (List<Object>) l;
        }
        throw new ShapeException(what + " is not an array");
    }

    private static String string(Object v, String what) throws ShapeException {
        if (v instanceof String s) {
            return s;
        }
        throw new ShapeException(what + " is not a string");
    }

    private static long integer(Object v, String what) throws ShapeException {
        if (v instanceof PushgateVerifier.Json.JsonNumber n) {
            try {
                return Long.parseLong(n.text());
            } catch (NumberFormatException e) {
                // refused below
            }
        }
        throw new ShapeException(what + " is not an integer");
    }
}
