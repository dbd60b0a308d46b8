import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.KeyFactory;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.security.ProviderException;
import java.security.PublicKey;
import java.security.Signature;
import java.security.spec.X509EncodedKeySpec;
import java.time.Instant;
import java.util.AbstractMap;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Base64;
import java.util.Collections;
import java.util.Deque;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Reference verifier of pushgate's app signature for Java 17 or later, with
 * the JDK only (Ed25519 from {@code java.security}). docs/APP-VERIFICATION.md
 * is the contract; the Go package signing/appsig is the reference this class
 * follows check for check, and both pass
 * signing/appsig/testdata/vectors.json (see {@code RunVectors}).
 *
 * <p>An Android app calls it from its FCM service with the message's
 * notification title and body (empty for a data-only message) and its data:
 *
 * <pre>{@code
 * try {
 *     PushgateVerifier.Claims claims = PushgateVerifier.verify(
 *             trustedKeys, device, title, body, message.getData());
 *     history.admit(claims); // history is kept as long as limits.max_ttl
 *     // show claims.title() and claims.body(), or act on claims.kind()
 * } catch (PushgateVerifier.Refusal refusal) {
 *     // show nothing; count refusal.getCode()
 * }
 * }</pre>
 */
public final class PushgateVerifier {
    private PushgateVerifier() {}

    /** The push data key that carries the signed block. */
    public static final String DATA_KEY = "pushgate";

    /** The block format this verifier knows. */
    public static final long VERSION = 1;

    /** Starts the signed bytes. */
    private static final String DOMAIN = "pushgate-notification/1";

    /** Refusal codes, in the order of the checks. */
    public static final String MALFORMED = "malformed";
    public static final String UNSUPPORTED_VERSION = "unsupported_version";
    public static final String UNKNOWN_KEY = "unknown_key";
    public static final String BAD_SIGNATURE = "bad_signature";
    public static final String EXPIRED = "expired";
    public static final String WRONG_AUDIENCE = "wrong_audience";
    public static final String ALREADY_SHOWN = "already_shown";

    /**
     * The DER header of an X.509 SubjectPublicKeyInfo holding a raw 32-byte
     * Ed25519 public key.
     */
    private static final byte[] ED25519_SPKI_HEADER = HexFormat.of().parseHex("302a300506032b6570032100");

    private static final String TOPIC_PREFIX = "topic:";
    private static final String TOKEN_PREFIX = "token:";

    /** What a push does on the phone. */
    public enum Kind {
        /** Shows a broadcast. */
        ALERT("alert"),
        /** Replaces a shown broadcast with new text. */
        RECALL_REPLACE("recall-replace"),
        /** Removes a shown broadcast; it shows nothing. */
        RECALL_REMOVE("recall-remove");

        private final String wire;

        Kind(String wire) {
            this.wire = wire;
        }

        /** The kind's name in the block. */
        public String wire() {
            return wire;
        }

        /** Returns the kind named {@code wire} in a block, or null. */
        public static Kind of(String wire) {
            for (Kind k : values()) {
                if (k.wire.equals(wire)) {
                    return k;
                }
            }
            return null;
        }
    }

    /**
     * What the app knows of the phone it runs on: its push token and the
     * topics the app subscribed it to.
     */
    public record Device(String token, List<String> topics) {
        public Device {
            token = token == null ? "" : token;
            topics = topics == null ? List.of() : List.copyOf(topics);
        }
    }

    /**
     * What a signature covers: everything the phone acts on. {@code expires}
     * is in Unix seconds; {@code data} is the push's data without
     * {@link #DATA_KEY}. A null string is the empty string.
     */
    public record Claims(String keyId, Kind kind, String broadcast, String collapse, long expires,
            String audience, String title, String body, Map<String, String> data) {
        public Claims {
            keyId = orEmpty(keyId);
            broadcast = orEmpty(broadcast);
            collapse = orEmpty(collapse);
            audience = orEmpty(audience);
            title = orEmpty(title);
            body = orEmpty(body);
            data = data == null ? Map.of() : Collections.unmodifiableMap(new HashMap<>(data));
        }
    }

    /** A push the app must not act on, with its refusal code. */
    public static final class Refusal extends Exception {
        private static final long serialVersionUID = 1L;

        private final String code;

        Refusal(String code, String message) {
            super(code + ": " + message);
            this.code = code;
        }

        /** The refusal code: one of the constants of {@link PushgateVerifier}. */
        public String getCode() {
            return code;
        }
    }

    /** {@link #verify(Map, Device, String, String, Map, long)} at the current time. */
    public static Claims verify(Map<String, byte[]> keys, Device device, String title, String body,
            Map<String, String> data) throws Refusal {
        return verify(keys, device, title, body, data, Instant.now().getEpochSecond());
    }

    /**
     * Checks a received push, in the order of docs/APP-VERIFICATION.md, and
     * returns its verified claims: what to show, replace or remove. Whether
     * it was acted on before is {@link History}'s to check.
     *
     * @param keys the trusted app-signing public keys (raw, 32 bytes) by key id
     * @param device this phone
     * @param title the notification's own title; empty or null for a data-only push
     * @param body the notification's own body; empty or null for a data-only push
     * @param data the push's data; {@code data.get("pushgate")} is the block's JSON text
     * @param now the clock, in Unix seconds
     * @throws Refusal with the refusal code
     */
    public static Claims verify(Map<String, byte[]> keys, Device device, String title, String body,
            Map<String, String> data, long now) throws Refusal {
        String raw = data == null ? null : data.get(DATA_KEY);
        if (raw == null) {
            throw new Refusal(MALFORMED, "the push carries no \"" + DATA_KEY + "\" block");
        }
        Block block = Block.decode(raw);
        if (block.v != VERSION) {
            throw new Refusal(UNSUPPORTED_VERSION, "block version " + block.v + ", this verifier knows " + VERSION);
        }
        Signed signed = block.claims(orEmpty(title), orEmpty(body), data);
        if (!keys.containsKey(block.kid)) {
            throw new Refusal(UNKNOWN_KEY, "key id \"" + block.kid + "\" is not trusted");
        }
        if (!signatureVerifies(keys.get(block.kid), canonicalEncode(signed.claims), signed.sig)) {
            throw new Refusal(BAD_SIGNATURE, "the signature does not verify under key \"" + block.kid + "\"");
        }
        if (now > signed.claims.expires()) {
            throw new Refusal(EXPIRED, "expired at " + signed.claims.expires());
        }
        if (!addressed(device, signed.claims.audience())) {
            throw new Refusal(WRONG_AUDIENCE, "addressed to \"" + signed.claims.audience() + "\", not to this device");
        }
        return signed.claims;
    }

    /**
     * Returns the bytes a signature covers: the domain string, then key id,
     * kind, broadcast, collapse, expires (decimal), audience, title and
     * body, each as a 4-byte big-endian length and its UTF-8 bytes; then the
     * number of data pairs (4 bytes, big-endian) and each pair, key then
     * value, in the bytewise order of the keys' UTF-8.
     */
    public static byte[] canonicalEncode(Claims c) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        out.writeBytes(DOMAIN.getBytes(StandardCharsets.US_ASCII));
        for (String f : new String[] {c.keyId(), c.kind().wire(), c.broadcast(), c.collapse(),
                Long.toString(c.expires()), c.audience(), c.title(), c.body()}) {
            appendField(out, utf8(f));
        }
        List<byte[][]> pairs = new ArrayList<>();
        for (Map.Entry<String, String> e : c.data().entrySet()) {
            pairs.add(new byte[][] {utf8(e.getKey()), utf8(e.getValue())});
        }
        pairs.sort((a, b) -> Arrays.compareUnsigned(a[0], b[0]));
        appendUint32(out, pairs.size());
        for (byte[][] pair : pairs) {
            appendField(out, pair[0]);
            appendField(out, pair[1]);
        }
        return out.toByteArray();
    }

    /** The audience binding of a push to one device token. */
    public static String audienceToken(String token) {
        try {
            byte[] sum = MessageDigest.getInstance("SHA-256").digest(utf8(token));
            return TOKEN_PREFIX + HexFormat.of().formatHex(sum);
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("the JDK has no SHA-256", e);
        }
    }

    /**
     * What the app remembers of the broadcasts it acted on, so that none is
     * shown twice: an alert shows only for a broadcast never seen; a
     * replacement only for one not yet replaced or removed; a removal always
     * acts. Its methods are synchronized.
     */
    public static final class History {
        private final Map<String, Kind> seen = new HashMap<>();

        /**
         * Records {@code c}, or refuses with {@link #ALREADY_SHOWN} a push
         * that must not be shown again.
         */
        public synchronized void admit(Claims c) throws Refusal {
            Kind prev = seen.get(c.broadcast());
            if (c.kind() == Kind.ALERT && prev != null) {
                throw new Refusal(ALREADY_SHOWN, "broadcast " + c.broadcast() + " was already shown (" + prev.wire() + ")");
            }
            if (c.kind() == Kind.RECALL_REPLACE && prev != null && prev != Kind.ALERT) {
                throw new Refusal(ALREADY_SHOWN, "broadcast " + c.broadcast() + " was already " + prev.wire());
            }
            seen.put(c.broadcast(), c.kind());
        }
    }

    /** Claims and the signature over them. */
    private record Signed(Claims claims, byte[] sig) {}

    private static boolean signatureVerifies(byte[] publicKey, byte[] message, byte[] sig) {
        if (publicKey == null || publicKey.length != 32) {
            return false;
        }
        byte[] spki = Arrays.copyOf(ED25519_SPKI_HEADER, ED25519_SPKI_HEADER.length + publicKey.length);
        System.arraycopy(publicKey, 0, spki, ED25519_SPKI_HEADER.length, publicKey.length);
        try {
            PublicKey key = KeyFactory.getInstance("Ed25519").generatePublic(new X509EncodedKeySpec(spki));
            Signature verifier = Signature.getInstance("Ed25519");
            verifier.initVerify(key);
            verifier.update(message);
            return verifier.verify(sig);
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("this Java runtime has no Ed25519 (it needs Java 15 or later)", e);
        } catch (GeneralSecurityException | ProviderException e) {
            // A key or signature the provider cannot use verifies nothing.
            return false;
        }
    }

    /**
     * Reports whether {@code audience} names this device: "all", a topic the
     * device is subscribed to, or the binding of its own token.
     */
    private static boolean addressed(Device device, String audience) {
        if (audience.equals("all")) {
            return true;
        }
        if (audience.length() > TOPIC_PREFIX.length() && audience.startsWith(TOPIC_PREFIX)) {
            return device.topics().contains(audience.substring(TOPIC_PREFIX.length()));
        }
        if (audience.startsWith(TOKEN_PREFIX)) {
            return !device.token().isEmpty() && audience.equals(audienceToken(device.token()));
        }
        return false;
    }

    /**
     * Decodes unpadded base64url to the 64 bytes of an Ed25519 signature,
     * or returns null. Line breaks are skipped, as the Go reference's decoder
     * skips them; the unused low bits of the last character are ignored, as
     * there.
     */
    private static byte[] decodeSignature(String text) {
        String compact = text.replace("\r", "").replace("\n", "");
        if (!SIGNATURE.matcher(compact).matches()) {
            return null;
        }
        byte[] sig = Base64.getUrlDecoder().decode(compact);
        return sig.length == 64 ? sig : null;
    }

    private static final Pattern SIGNATURE = Pattern.compile("[A-Za-z0-9_-]{86}");

    private static void appendField(ByteArrayOutputStream out, byte[] field) {
        appendUint32(out, field.length);
        out.writeBytes(field);
    }

    private static void appendUint32(ByteArrayOutputStream out, int n) {
        out.write(n >>> 24);
        out.write(n >>> 16);
        out.write(n >>> 8);
        out.write(n);
    }

    /** Encodes {@code s} as UTF-8; an unpaired surrogate becomes U+FFFD. */
    private static byte[] utf8(String s) {
        StringBuilder wellFormed = new StringBuilder(s.length());
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (Character.isHighSurrogate(c) && i + 1 < s.length() && Character.isLowSurrogate(s.charAt(i + 1))) {
                wellFormed.append(c).append(s.charAt(++i));
            } else if (Character.isSurrogate(c)) {
                wellFormed.append('\uFFFD');
            } else {
                wellFormed.append(c);
            }
        }
        return wellFormed.toString().getBytes(StandardCharsets.UTF_8);
    }

    private static String orEmpty(String s) {
        return s == null ? "" : s;
    }

    /**
     * The signed block as it travels under {@link #DATA_KEY}. {@code title}
     * and {@code body} are null when absent.
     */
    private static final class Block {
        private static final Set<String> FIELDS =
                Set.of("v", "kid", "kind", "broadcast", "recall", "collapse", "exp", "aud", "title", "body", "sig");
        private static final Pattern INTEGER = Pattern.compile("-?(?:0|[1-9][0-9]*)");

        long v;
        String kid = "";
        String kind = "";
        String broadcast = "";
        String recall = "";
        String collapse = "";
        long exp;
        String aud = "";
        String title;
        String body;
        String sig = "";

        /**
         * Decodes the block's JSON text as the Go reference decodes it into
         * its Block struct, so that every verifier reads the same block from
         * the same text: the text must be one JSON value; null decodes to an
         * empty block, anything else but an object is malformed; members are
         * matched to fields as Go's encoding/json matches them (exactly, else
         * ignoring ASCII case, with U+017F and U+212A folding to "s" and
         * "k"); a later member overrides an earlier one; null leaves a field
         * as it was, but for title and body, which it makes absent; a field
         * of the wrong type, or an integer with a fraction, an exponent or
         * out of the 64-bit range, is malformed; other members are skipped.
         */
        static Block decode(String text) throws Refusal {
            Object doc;
            try {
                doc = Json.parse(text);
            } catch (Json.SyntaxException e) {
                throw new Refusal(MALFORMED, "the \"" + DATA_KEY + "\" block is not JSON: " + e.getMessage());
            }
            Block b = new Block();
            if (doc == null) {
                return b;
            }
            if (!(doc instanceof Json.JsonObject object)) {
                throw new Refusal(MALFORMED, "the \"" + DATA_KEY + "\" block is not a JSON object");
            }
            for (Map.Entry<String, Object> member : object.members()) {
                String name = field(member.getKey());
                if (name == null) {
                    continue;
                }
                Object value = member.getValue();
                if (value == null) {
                    if (name.equals("title")) {
                        b.title = null;
                    } else if (name.equals("body")) {
                        b.body = null;
                    }
                    continue;
                }
                switch (name) {
                    case "v" -> b.v = int64(name, value);
                    case "exp" -> b.exp = int64(name, value);
                    case "kid" -> b.kid = string(name, value);
                    case "kind" -> b.kind = string(name, value);
                    case "broadcast" -> b.broadcast = string(name, value);
                    case "recall" -> b.recall = string(name, value);
                    case "collapse" -> b.collapse = string(name, value);
                    case "aud" -> b.aud = string(name, value);
                    case "title" -> b.title = string(name, value);
                    case "body" -> b.body = string(name, value);
                    case "sig" -> b.sig = string(name, value);
                    default -> throw new IllegalStateException("unhandled block field " + name);
                }
            }
            return b;
        }

        /** Returns the field a member key names, or null. */
        private static String field(String key) {
            StringBuilder folded = new StringBuilder(key.length());
            for (int i = 0; i < key.length(); ) {
                int c = key.codePointAt(i);
                i += Character.charCount(c);
                if (c == 0x17F) {
                    folded.append('s');
                } else if (c == 0x212A) {
                    folded.append('k');
                } else if (c < 0x80) {
                    folded.append(c >= 'A' && c <= 'Z' ? (char) (c + ('a' - 'A')) : (char) c);
                } else {
                    return null; // no other character folds to a field name's
                }
            }
            String name = folded.toString();
            return FIELDS.contains(name) ? name : null;
        }

        private static long int64(String name, Object value) throws Refusal {
            if (value instanceof Json.JsonNumber n && INTEGER.matcher(n.text()).matches()) {
                try {
                    return Long.parseLong(n.text());
                } catch (NumberFormatException e) {
                    // out of range: refused below
                }
            }
            throw new Refusal(MALFORMED, "block field " + name + " is not a 64-bit integer");
        }

        private static String string(String name, Object value) throws Refusal {
            if (value instanceof String s) {
                return s;
            }
            throw new Refusal(MALFORMED, "block field " + name + " is not a string");
        }

        /**
         * Rebuilds what the block's signature covers from the block and the
         * push, after the block's own checks.
         */
        Signed claims(String pushTitle, String pushBody, Map<String, String> data) throws Refusal {
            Kind k = Kind.of(kind);
            if (k == null) {
                throw new Refusal(MALFORMED, "unknown kind \"" + kind + "\"");
            }
            if (kid.isEmpty() || aud.isEmpty()) {
                throw new Refusal(MALFORMED, "the block has no key id or no audience");
            }
            if (k == Kind.RECALL_REMOVE) {
                if (recall.isEmpty() || !broadcast.isEmpty()) {
                    throw new Refusal(MALFORMED, "a removal names the removed broadcast under \"recall\" only");
                }
            } else if (broadcast.isEmpty() || !recall.isEmpty()) {
                throw new Refusal(MALFORMED, "a " + kind + " names its broadcast under \"broadcast\" only");
            }
            byte[] decoded = decodeSignature(sig);
            if (decoded == null) {
                throw new Refusal(MALFORMED, "the signature is not 64 bytes of unpadded base64url");
            }
            String t = pushTitle;
            String bd = pushBody;
            if (title != null || body != null) {
                if (!t.isEmpty() || !bd.isEmpty()) {
                    throw new Refusal(MALFORMED, "the push has text of its own beside the block's");
                }
                t = orEmpty(title);
                bd = orEmpty(body);
            }
            Map<String, String> claimsData = new HashMap<>();
            for (Map.Entry<String, String> e : data.entrySet()) {
                if (e.getKey() == null || e.getValue() == null) {
                    throw new Refusal(MALFORMED, "the push data has a null key or value");
                }
                if (!e.getKey().equals(DATA_KEY)) {
                    claimsData.put(e.getKey(), e.getValue());
                }
            }
            Claims c = new Claims(kid, k, broadcast + recall, collapse, exp, aud, t, bd, claimsData);
            return new Signed(c, decoded);
        }
    }

    /**
     * A strict JSON parser (RFC 8259, as the Go reference reads it). A value
     * is a {@link JsonObject}, a {@code List<Object>}, a String, a
     * {@link JsonNumber}, a Boolean, or null. Objects keep their members in
     * order, duplicates included, and numbers keep their text, so that the
     * block decodes exactly. It is iterative, with the Go reference's
     * nesting limit, so deep nesting is a syntax error rather than a stack
     * overflow. An escaped surrogate that is not half of an escaped pair
     * decodes to U+FFFD, as in the Go reference.
     */
    public static final class Json {
        private Json() {}

        /** The Go reference's nesting limit. */
        private static final int MAX_DEPTH = 10000;

        private static final Pattern NUMBER = Pattern.compile("-?(?:0|[1-9][0-9]*)(?:\\.[0-9]+)?(?:[eE][+-]?[0-9]+)?");

        /** Text that is not one JSON value. */
        public static final class SyntaxException extends Exception {
            private static final long serialVersionUID = 1L;

            SyntaxException(String message) {
                super(message);
            }
        }

        /** A JSON number, as written. */
        public record JsonNumber(String text) {}

        /** A JSON object: its members in order. */
        public static final class JsonObject {
            private final List<Map.Entry<String, Object>> members = new ArrayList<>();

            /** The members in order, duplicate keys included. */
            public List<Map.Entry<String, Object>> members() {
                return Collections.unmodifiableList(members);
            }

            /** Reports whether a member is named {@code key}. */
            public boolean has(String key) {
                return members.stream().anyMatch(m -> m.getKey().equals(key));
            }

            /** The value of the last member named {@code key}, or null. */
            public Object get(String key) {
                for (int i = members.size() - 1; i >= 0; i--) {
                    if (members.get(i).getKey().equals(key)) {
                        return members.get(i).getValue();
                    }
                }
                return null;
            }
        }

        /** Parses {@code text}, which must be exactly one JSON value. */
        public static Object parse(String text) throws SyntaxException {
            return new Parser(text).document();
        }

        /** An open object or array, and an object's pending member key. */
        private static final class Frame {
            final Object value;
            String key;

            Frame(Object value) {
                this.value = value;
            }
        }

        private static final class Parser {
            private final String s;
            private int i;

            Parser(String s) {
                this.s = s;
            }

            private SyntaxException fail(String what) {
                return new SyntaxException(what + " at offset " + i);
            }

            private int peek() {
                return i < s.length() ? s.charAt(i) : -1;
            }

            private void space() {
                while (i < s.length()) {
                    char c = s.charAt(i);
                    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
                        return;
                    }
                    i++;
                }
            }

            @SuppressWarnings("unchecked")
            Object document() throws SyntaxException {
                Deque<Frame> open = new ArrayDeque<>();
                for (;;) {
                    space();
                    Object value;
                    int c = peek();
                    if (c == '{' || c == '[') {
                        if (open.size() >= MAX_DEPTH) {
                            throw fail("nesting too deep");
                        }
                        i++;
                        Frame frame = new Frame(c == '{' ? new JsonObject() : new ArrayList<Object>());
                        space();
                        if (peek() == (c == '{' ? '}' : ']')) {
                            i++;
                            value = frame.value;
                        } else {
                            open.push(frame);
                            if (c == '{') {
                                frame.key = memberKey();
                            }
                            continue;
                        }
                    } else {
                        value = scalar();
                    }
                    // value is complete: add it to its container, closing
                    // each container that ends here.
                    for (;;) {
                        Frame top = open.peek();
                        if (top == null) {
                            space();
                            if (i != s.length()) {
                                throw fail("text after the value");
                            }
                            return value;
                        }
                        boolean isObject = top.value instanceof JsonObject;
                        if (isObject) {
                            ((JsonObject) top.value).members.add(new AbstractMap.SimpleImmutableEntry<>(top.key, value));
                        } else {
                            ((List<Object>) top.value).add(value);
                        }
                        space();
                        int next = peek();
                        if (next == ',') {
                            i++;
                            if (isObject) {
                                top.key = memberKey();
                            }
                            break;
                        }
                        if (next != (isObject ? '}' : ']')) {
                            throw fail(isObject ? "expected ',' or '}'" : "expected ',' or ']'");
                        }
                        i++;
                        open.pop();
                        value = top.value;
                    }
                }
            }

            private String memberKey() throws SyntaxException {
                space();
                if (peek() != '"') {
                    throw fail("expected a member name");
                }
                String key = string();
                space();
                if (peek() != ':') {
                    throw fail("expected ':'");
                }
                i++;
                return key;
            }

            private Object scalar() throws SyntaxException {
                int c = peek();
                if (c == '"') {
                    return string();
                }
                if (c == '-' || (c >= '0' && c <= '9')) {
                    Matcher m = NUMBER.matcher(s).region(i, s.length());
                    if (!m.lookingAt()) {
                        throw fail("bad number");
                    }
                    i = m.end();
                    return new JsonNumber(m.group());
                }
                if (s.startsWith("true", i)) {
                    i += 4;
                    return Boolean.TRUE;
                }
                if (s.startsWith("false", i)) {
                    i += 5;
                    return Boolean.FALSE;
                }
                if (s.startsWith("null", i)) {
                    i += 4;
                    return null;
                }
                throw fail(c < 0 ? "unexpected end" : "unexpected character");
            }

            private String string() throws SyntaxException {
                StringBuilder out = new StringBuilder();
                i++; // the opening quote
                for (;;) {
                    if (i >= s.length()) {
                        throw fail("unterminated string");
                    }
                    char c = s.charAt(i);
                    if (c == '"') {
                        i++;
                        return out.toString();
                    }
                    if (c < 0x20) {
                        throw fail("control character in string");
                    }
                    if (c != '\\') {
                        out.append(c);
                        i++;
                        continue;
                    }
                    char e = i + 1 < s.length() ? s.charAt(i + 1) : 0;
                    if (e == 'u') {
                        int u = hex4(i + 2);
                        if (u < 0) {
                            throw fail("bad \\u escape");
                        }
                        i += 6;
                        if (u < 0xD800 || u >= 0xE000) {
                            out.append((char) u);
                        } else {
                            int low = u < 0xDC00 && s.startsWith("\\u", i) ? hex4(i + 2) : -1;
                            if (low >= 0xDC00 && low < 0xE000) {
                                out.append((char) u).append((char) low);
                                i += 6;
                            } else {
                                out.append('\uFFFD');
                            }
                        }
                        continue;
                    }
                    switch (e) {
                        case '"', '\\', '/' -> out.append(e);
                        case 'b' -> out.append('\b');
                        case 'f' -> out.append('\f');
                        case 'n' -> out.append('\n');
                        case 'r' -> out.append('\r');
                        case 't' -> out.append('\t');
                        default -> throw fail("bad escape");
                    }
                    i += 2;
                }
            }

            /** Returns the value of the four hex digits at {@code at}, or -1. */
            private int hex4(int at) {
                if (at + 4 > s.length()) {
                    return -1;
                }
                int v = 0;
                for (int k = at; k < at + 4; k++) {
                    char c = s.charAt(k);
                    int d;
                    if (c >= '0' && c <= '9') {
                        d = c - '0';
                    } else if (c >= 'a' && c <= 'f') {
                        d = c - 'a' + 10;
                    } else if (c >= 'A' && c <= 'F') {
                        d = c - 'A' + 10;
                    } else {
                        return -1;
                    }
                    v = v << 4 | d;
                }
                return v;
            }
        }
    }
}
