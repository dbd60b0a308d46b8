// Reference verifier of pushgate's app signature for iOS (CryptoKit and
// Foundation only). docs/APP-VERIFICATION.md is the contract; the Go package
// signing/appsig is the reference this file follows check for check. It is
// written against signing/appsig/testdata/vectors.json: runVectors(_:) runs
// that file (from an XCTest, say) the way the JavaScript and Java harnesses
// do. There is no Swift toolchain where pushgate's CI runs, so this file is
// not run there.
//
// How a Notification Service Extension uses it. In require mode APNs alerts
// carry mutable-content, so the extension sees every alert before it is
// shown; it verifies, and anything that does not verify is replaced with a
// neutral text, never shown as sent (Apple requires the extension to deliver
// something). AppConfig (the trusted keys, this phone's token and topics)
// and HistoryStore (the History, kept in the app group) are the app's own:
//
//     import UserNotifications
//
//     final class NotificationService: UNNotificationServiceExtension {
//         private var contentHandler: ((UNNotificationContent) -> Void)?
//
//         override func didReceive(_ request: UNNotificationRequest,
//                                  withContentHandler contentHandler: @escaping (UNNotificationContent) -> Void) {
//             self.contentHandler = contentHandler
//             let content = request.content
//             do {
//                 let push = try PushgateVerifier.apnsPush(userInfo: content.userInfo)
//                 let claims = try PushgateVerifier.verify(
//                     keys: AppConfig.trustedKeys, device: AppConfig.device,
//                     title: content.title, body: content.body, block: push.block, data: push.data)
//                 // The history lives in the app group, shared with the app:
//                 // each push may start a new extension process.
//                 let history = HistoryStore.load()
//                 try history.admit(claims)
//                 HistoryStore.save(history)
//                 deliver(content) // verified: shown as sent
//             } catch {
//                 deliver(Self.unverified(code: (error as? PushgateVerifier.Refusal)?.code ?? "error"))
//             }
//         }
//
//         override func serviceExtensionTimeWillExpire() {
//             // Out of time: never let the system fall back to the unverified original.
//             deliver(Self.unverified(code: "timeout"))
//         }
//
//         private func deliver(_ content: UNNotificationContent) {
//             contentHandler?(content)
//             contentHandler = nil
//         }
//
//         // unverified is the neutral content shown instead of a push that did
//         // not verify, marked so that the app can remove it
//         // (removeDeliveredNotifications) and count the refusal by code. With
//         // the com.apple.developer.usernotifications.filtering entitlement the
//         // extension can drop the push instead, by delivering an empty
//         // UNNotificationContent().
//         static func unverified(code: String) -> UNNotificationContent {
//             let neutral = UNMutableNotificationContent()
//             neutral.body = "A notification could not be verified"
//             neutral.userInfo = ["pushgate-refused": code]
//             return neutral
//         }
//     }
//
// A removal (recall-remove) is a silent push: the extension does not see it.
// The app verifies it the same way in
// application(_:didReceiveRemoteNotification:fetchCompletionHandler:), then
// removes the delivered notification shown under claims.collapse; a removal
// that does not verify removes nothing.

import CryptoKit
import Foundation

/// Verifies pushgate's signed pushes: `verify` checks a push, in the order
/// of docs/APP-VERIFICATION.md, and `History` refuses one shown before.
public enum PushgateVerifier {
    /// The push data key (an FCM data key, a top-level key of the APNs
    /// payload) that carries the signed block.
    public static let dataKey = "pushgate"

    /// The block format this verifier knows.
    public static let version: Int64 = 1

    /// Starts the signed bytes.
    private static let domain = "pushgate-notification/1"

    /// What a push does on the phone.
    public enum Kind: String, CaseIterable {
        /// Shows a broadcast.
        case alert
        /// Replaces a shown broadcast with new text.
        case recallReplace = "recall-replace"
        /// Removes a shown broadcast; it shows nothing.
        case recallRemove = "recall-remove"
    }

    /// The refusal codes, in the order of the checks.
    public enum Code {
        public static let malformed = "malformed"
        public static let unsupportedVersion = "unsupported_version"
        public static let unknownKey = "unknown_key"
        public static let badSignature = "bad_signature"
        public static let expired = "expired"
        public static let wrongAudience = "wrong_audience"
        public static let alreadyShown = "already_shown"
    }

    /// A push the app must not act on, with its refusal code.
    public struct Refusal: Error, CustomStringConvertible {
        /// One of `Code`.
        public let code: String
        public let message: String

        public var description: String { "\(code): \(message)" }
    }

    /// What the app knows of the phone it runs on.
    public struct Device {
        /// The phone's push token: for APNs, the lowercase hex of the device token.
        public var token: String
        /// The topics the app subscribed this phone to.
        public var topics: [String]

        public init(token: String, topics: [String]) {
            self.token = token
            self.topics = topics
        }
    }

    /// What a signature covers: everything the phone acts on.
    public struct Claims {
        public var keyID: String
        public var kind: Kind
        /// The broadcast shown (an alert), replaced or removed.
        public var broadcast: String
        public var collapse: String
        /// When the push stops being valid, in Unix seconds.
        public var expires: Int64
        public var audience: String
        public var title: String
        public var body: String
        /// The push's application data, without `dataKey`.
        public var data: [String: String]

        public init(keyID: String = "", kind: Kind, broadcast: String, collapse: String = "", expires: Int64 = 0,
                    audience: String = "", title: String = "", body: String = "", data: [String: String] = [:]) {
            self.keyID = keyID
            self.kind = kind
            self.broadcast = broadcast
            self.collapse = collapse
            self.expires = expires
            self.audience = audience
            self.title = title
            self.body = body
            self.data = data
        }
    }

    // MARK: - Verifying

    /// Splits an APNs payload (a notification's userInfo) into the block, as
    /// the system decoded it, and the application data: the top-level keys
    /// other than "aps" and `dataKey`, which must be strings.
    public static func apnsPush(userInfo: [AnyHashable: Any]) throws -> (block: Any, data: [String: String]) {
        guard let block = userInfo[dataKey] else {
            throw Refusal(code: Code.malformed, message: "the push carries no \"\(dataKey)\" block")
        }
        var data: [String: String] = [:]
        for (key, value) in userInfo {
            guard let key = key.base as? String else {
                throw Refusal(code: Code.malformed, message: "the payload has a key that is not a string")
            }
            if sameBytes(key, "aps") || sameBytes(key, dataKey) {
                continue
            }
            guard let text = value as? String else {
                throw Refusal(code: Code.malformed, message: "data value \(key) is not a string")
            }
            data[key] = text
        }
        return (block, data)
    }

    /// Checks a push whose data carries the block as JSON text under
    /// `dataKey`: an FCM-style push, and the form of the test vectors.
    ///
    /// - Parameters:
    ///   - keys: the trusted app-signing public keys (raw, 32 bytes) by key id.
    ///   - title, body: the notification's own text; empty for a data-only push.
    ///   - data: the push's data; `data["pushgate"]` is the block's JSON text.
    ///   - now: the clock.
    /// - Returns: the verified claims: what to show, replace or remove.
    /// - Throws: `Refusal` with the refusal code.
    public static func verify(keys: [String: Data], device: Device, title: String, body: String,
                              data: [String: String], now: Date = Date()) throws -> Claims {
        guard let raw = data[dataKey] else {
            throw Refusal(code: Code.malformed, message: "the push carries no \"\(dataKey)\" block")
        }
        let block: Any
        do {
            block = try JSONSerialization.jsonObject(with: Data(raw.utf8), options: [.fragmentsAllowed])
        } catch {
            throw Refusal(code: Code.malformed, message: "the \"\(dataKey)\" block is not JSON")
        }
        var rest = data
        rest[dataKey] = nil
        return try verify(keys: keys, device: device, title: title, body: body, block: block, data: rest, now: now)
    }

    /// Checks a push whose block is already decoded (an APNs payload's, see
    /// `apnsPush`), in the order of docs/APP-VERIFICATION.md: the block is
    /// well formed and of this version, its key id is trusted, the signature
    /// verifies over the canonical encoding, it has not expired, and its
    /// audience is this device's. Whether it was shown before is `History`'s
    /// to check.
    ///
    /// - Parameters:
    ///   - block: the block's decoded JSON value (a dictionary).
    ///   - data: the push's application data, without the block.
    /// - Returns: the verified claims.
    /// - Throws: `Refusal` with the refusal code.
    public static func verify(keys: [String: Data], device: Device, title: String, body: String,
                              block: Any, data: [String: String], now: Date = Date()) throws -> Claims {
        let b = try Block(decoding: block)
        guard b.v == version else {
            throw Refusal(code: Code.unsupportedVersion, message: "block version \(b.v), this verifier knows \(version)")
        }
        let (claims, sig) = try claimsOf(b, title: title, body: body, data: data)
        // Key ids, like every string the checks compare, compare byte by
        // byte, not as Swift compares strings (canonical equivalence).
        guard let key = keys.first(where: { sameBytes($0.key, b.kid) })?.value else {
            throw Refusal(code: Code.unknownKey, message: "key id \"\(b.kid)\" is not trusted")
        }
        guard signatureVerifies(key: key, message: canonicalEncode(claims), signature: sig) else {
            throw Refusal(code: Code.badSignature, message: "the signature does not verify under key \"\(b.kid)\"")
        }
        guard unixSeconds(now) <= claims.expires else {
            throw Refusal(code: Code.expired, message: "expired at \(claims.expires)")
        }
        guard addressed(device, claims.audience) else {
            throw Refusal(code: Code.wrongAudience, message: "addressed to \"\(claims.audience)\", not to this device")
        }
        return claims
    }

    /// Returns the bytes a signature covers: the domain string, then key id,
    /// kind, broadcast, collapse, expires (decimal), audience, title and
    /// body, each as a 4-byte big-endian length and its UTF-8 bytes; then the
    /// number of data pairs (4 bytes, big-endian) and each pair, key then
    /// value, in the bytewise order of the keys' UTF-8.
    public static func canonicalEncode(_ c: Claims) -> Data {
        var out = Data(domain.utf8)
        for field in [c.keyID, c.kind.rawValue, c.broadcast, c.collapse, String(c.expires),
                      c.audience, c.title, c.body] {
            appendField(&out, Array(field.utf8))
        }
        let pairs = c.data
            .map { (key: Array($0.key.utf8), value: Array($0.value.utf8)) }
            .sorted { $0.key.lexicographicallyPrecedes($1.key) }
        appendUInt32(&out, pairs.count)
        for pair in pairs {
            appendField(&out, pair.key)
            appendField(&out, pair.value)
        }
        return out
    }

    /// The audience binding of a push to one device token.
    public static func audienceToken(_ token: String) -> String {
        "token:" + SHA256.hash(data: Data(token.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    // MARK: - History

    /// What the app remembers of the broadcasts it acted on, so that none is
    /// shown twice: an alert shows only for a broadcast never seen; a
    /// replacement only for one not yet replaced or removed; a removal always
    /// acts. Keep it (in the app group, for an extension) at least as long as
    /// the deployment's longest TTL; `snapshot` and `init(snapshot:)` store
    /// and restore it as a property list.
    public final class History {
        private var seen: [Data: Kind] = [:]
        private let lock = NSLock()

        public init() {}

        /// Restores a history from `snapshot`.
        public init(snapshot: [String: String]) {
            for (broadcast, kind) in snapshot {
                if let kind = Kind(rawValue: kind) {
                    seen[Data(broadcast.utf8)] = kind
                }
            }
        }

        /// The history as broadcast id → kind.
        public var snapshot: [String: String] {
            lock.lock()
            defer { lock.unlock() }
            var out: [String: String] = [:]
            for (broadcast, kind) in seen {
                out[String(decoding: broadcast, as: UTF8.self)] = kind.rawValue
            }
            return out
        }

        /// Records `claims`, or throws a `Refusal` with `Code.alreadyShown`
        /// for a push that must not be shown again.
        public func admit(_ claims: Claims) throws {
            lock.lock()
            defer { lock.unlock() }
            let id = Data(claims.broadcast.utf8)
            if let prev = seen[id] {
                if claims.kind == .alert {
                    throw Refusal(code: Code.alreadyShown,
                                  message: "broadcast \(claims.broadcast) was already shown (\(prev.rawValue))")
                }
                if claims.kind == .recallReplace && prev != .alert {
                    throw Refusal(code: Code.alreadyShown,
                                  message: "broadcast \(claims.broadcast) was already \(prev.rawValue)")
                }
            }
            seen[id] = claims.kind
        }
    }

    // MARK: - The block

    /// The signed block as it travels under `dataKey`. `title` and `body`
    /// are nil when absent.
    private struct Block {
        var v: Int64 = 0
        var kid = ""
        var kind = ""
        var broadcast = ""
        var recall = ""
        var collapse = ""
        var exp: Int64 = 0
        var aud = ""
        var title: String?
        var body: String?
        var sig = ""

        static let fields: Set<String> = ["v", "kid", "kind", "broadcast", "recall", "collapse", "exp", "aud",
                                          "title", "body", "sig"]

        /// Decodes the block as the Go reference decodes its JSON, as far as
        /// a decoded value allows: null is an empty block, anything else but
        /// an object is malformed; members are matched to fields ignoring
        /// ASCII case (U+017F and U+212A folding to "s" and "k"); null leaves
        /// a field as it was, but for title and body, which it makes absent;
        /// a field of the wrong type, or a number that is not an integer of
        /// 64 bits, is malformed; other members are skipped. Two members for
        /// one field (differing in case) are malformed: the decoded
        /// dictionary no longer tells which came last. What the system's JSON
        /// decoder itself accepts or changes (duplicate keys, numbers such as
        /// 1.0, escaped unpaired surrogates) is beyond this decoding.
        init(decoding value: Any) throws {
            if value is NSNull {
                return
            }
            // Iterated as an NSDictionary: bridging to [String: Any] would
            // trap on keys that differ only in Unicode normalization.
            guard let object = value as? NSDictionary else {
                throw Refusal(code: Code.malformed, message: "the \"\(dataKey)\" block is not a JSON object")
            }
            var named = Set<String>()
            for (key, member) in object {
                guard let key = key as? String, let name = Block.field(key) else {
                    continue
                }
                guard named.insert(name).inserted else {
                    throw Refusal(code: Code.malformed, message: "the block has more than one \(name)")
                }
                if member is NSNull {
                    if name == "title" {
                        title = nil
                    } else if name == "body" {
                        body = nil
                    }
                    continue
                }
                switch name {
                case "v": v = try Block.integer(member, name)
                case "exp": exp = try Block.integer(member, name)
                case "kid": kid = try Block.string(member, name)
                case "kind": kind = try Block.string(member, name)
                case "broadcast": broadcast = try Block.string(member, name)
                case "recall": recall = try Block.string(member, name)
                case "collapse": collapse = try Block.string(member, name)
                case "aud": aud = try Block.string(member, name)
                case "title": title = try Block.string(member, name)
                case "body": body = try Block.string(member, name)
                case "sig": sig = try Block.string(member, name)
                default: break
                }
            }
        }

        /// Returns the field a member key names, or nil.
        static func field(_ key: String) -> String? {
            var folded = ""
            for scalar in key.unicodeScalars {
                switch scalar.value {
                case 0x41...0x5A:
                    folded.unicodeScalars.append(Unicode.Scalar(UInt8(scalar.value + 0x20)))
                case 0x00..<0x80:
                    folded.unicodeScalars.append(scalar)
                case 0x17F:
                    folded += "s"
                case 0x212A:
                    folded += "k"
                default:
                    return nil // no other character folds to a field name's
                }
            }
            return fields.contains(folded) ? folded : nil
        }

        static func integer(_ value: Any, _ name: String) throws -> Int64 {
            guard let number = value as? NSNumber,
                  CFGetTypeID(number) != CFBooleanGetTypeID(),
                  !CFNumberIsFloatType(number as CFNumber),
                  let n = Int64(exactly: number)
            else {
                throw Refusal(code: Code.malformed, message: "block field \(name) is not a 64-bit integer")
            }
            return n
        }

        static func string(_ value: Any, _ name: String) throws -> String {
            guard let text = value as? String else {
                throw Refusal(code: Code.malformed, message: "block field \(name) is not a string")
            }
            return text
        }
    }

    /// Rebuilds what the block's signature covers from the block and the
    /// push, after the block's own checks.
    private static func claimsOf(_ b: Block, title: String, body: String,
                                 data: [String: String]) throws -> (Claims, Data) {
        guard let kind = Kind.allCases.first(where: { sameBytes($0.rawValue, b.kind) }) else {
            throw Refusal(code: Code.malformed, message: "unknown kind \"\(b.kind)\"")
        }
        guard !b.kid.isEmpty, !b.aud.isEmpty else {
            throw Refusal(code: Code.malformed, message: "the block has no key id or no audience")
        }
        if kind == .recallRemove {
            guard !b.recall.isEmpty, b.broadcast.isEmpty else {
                throw Refusal(code: Code.malformed, message: "a removal names the removed broadcast under \"recall\" only")
            }
        } else {
            guard !b.broadcast.isEmpty, b.recall.isEmpty else {
                throw Refusal(code: Code.malformed, message: "a \(b.kind) names its broadcast under \"broadcast\" only")
            }
        }
        guard let sig = decodeSignature(b.sig) else {
            throw Refusal(code: Code.malformed, message: "the signature is not 64 bytes of unpadded base64url")
        }
        var title = title
        var body = body
        if b.title != nil || b.body != nil {
            guard title.isEmpty, body.isEmpty else {
                throw Refusal(code: Code.malformed, message: "the push has text of its own beside the block's")
            }
            title = b.title ?? ""
            body = b.body ?? ""
        }
        var rest = data
        rest[dataKey] = nil
        let claims = Claims(keyID: b.kid, kind: kind, broadcast: b.broadcast + b.recall, collapse: b.collapse,
                            expires: b.exp, audience: b.aud, title: title, body: body, data: rest)
        return (claims, sig)
    }

    // MARK: - Helpers

    private static func signatureVerifies(key: Data, message: Data, signature: Data) -> Bool {
        guard key.count == 32, let publicKey = try? Curve25519.Signing.PublicKey(rawRepresentation: key) else {
            return false
        }
        return publicKey.isValidSignature(signature, for: message)
    }

    /// Reports whether `audience` names this device: "all", a topic the
    /// device is subscribed to, or the binding of its own token.
    private static func addressed(_ device: Device, _ audience: String) -> Bool {
        if sameBytes(audience, "all") {
            return true
        }
        let aud = Array(audience.utf8)
        let topicPrefix = Array("topic:".utf8)
        if aud.count > topicPrefix.count && aud.starts(with: topicPrefix) {
            let topic = aud[topicPrefix.count...]
            return device.topics.contains { $0.utf8.elementsEqual(topic) }
        }
        if aud.starts(with: "token:".utf8) {
            return !device.token.isEmpty && sameBytes(audience, audienceToken(device.token))
        }
        return false
    }

    /// Decodes unpadded base64url to the 64 bytes of an Ed25519 signature,
    /// or returns nil. Line breaks are skipped, as the Go reference's decoder
    /// skips them.
    private static func decodeSignature(_ text: String) -> Data? {
        let compact = text.utf8.filter { $0 != UInt8(ascii: "\n") && $0 != UInt8(ascii: "\r") }
        guard compact.count == 86, let sig = base64URLDecode(compact), sig.count == 64 else {
            return nil
        }
        return sig
    }

    /// Decodes unpadded base64url, or returns nil. The unused low bits of the
    /// last character are ignored, as the Go reference ignores them.
    static func base64URLDecode<S: Sequence>(_ text: S) -> Data? where S.Element == UInt8 {
        var out = Data()
        var acc: UInt32 = 0
        var bits = 0
        var count = 0
        for c in text {
            let v: UInt8
            switch c {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): v = c - UInt8(ascii: "A")
            case UInt8(ascii: "a")...UInt8(ascii: "z"): v = c - UInt8(ascii: "a") + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): v = c - UInt8(ascii: "0") + 52
            case UInt8(ascii: "-"): v = 62
            case UInt8(ascii: "_"): v = 63
            default: return nil
            }
            acc = (acc << 6) | UInt32(v)
            bits += 6
            count += 1
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: acc >> UInt32(bits)))
            }
        }
        return count % 4 == 1 ? nil : out
    }

    private static func appendField(_ out: inout Data, _ bytes: [UInt8]) {
        appendUInt32(&out, bytes.count)
        out.append(contentsOf: bytes)
    }

    private static func appendUInt32(_ out: inout Data, _ n: Int) {
        let v = UInt32(truncatingIfNeeded: n)
        out.append(contentsOf: [UInt8(truncatingIfNeeded: v >> 24), UInt8(truncatingIfNeeded: v >> 16),
                                UInt8(truncatingIfNeeded: v >> 8), UInt8(truncatingIfNeeded: v)])
    }

    private static func sameBytes(_ a: String, _ b: String) -> Bool {
        a.utf8.elementsEqual(b.utf8)
    }

    /// Unix seconds of `date`, rounded down.
    private static func unixSeconds(_ date: Date) -> Int64 {
        let seconds = date.timeIntervalSince1970.rounded(.down)
        if seconds >= 9.2e18 {
            return Int64.max
        }
        if seconds <= -9.2e18 {
            return Int64.min
        }
        return Int64(seconds)
    }

    // MARK: - Test vectors

    /// Runs the test vectors (the contents of
    /// signing/appsig/testdata/vectors.json) through this verifier and
    /// returns one line per case that disagrees: an empty array means every
    /// case passed. Each case replays its history, then verifies and admits
    /// its push; the verdict must be the case's, and a push that verifies
    /// must have the case's canonical bytes.
    public static func runVectors(_ json: Data) throws -> [String] {
        guard let vectors = try JSONSerialization.jsonObject(with: json) as? [String: Any],
              let rawKeys = vectors["keys"] as? [String: String],
              let now = (vectors["now"] as? NSNumber)?.int64Value,
              let device = vectors["device"] as? [String: Any],
              let token = device["token"] as? String,
              let topics = device["topics"] as? [String],
              let cases = vectors["cases"] as? [[String: Any]], !cases.isEmpty
        else {
            return ["the vector file is not shaped as expected"]
        }
        var keys: [String: Data] = [:]
        for (id, key) in rawKeys {
            guard let raw = base64URLDecode(key.utf8) else {
                return ["key \(id) is not base64url"]
            }
            keys[id] = raw
        }
        let clock = Date(timeIntervalSince1970: TimeInterval(now))
        let phone = Device(token: token, topics: topics)
        var failures: [String] = []
        for c in cases {
            let name = c["name"] as? String ?? "?"
            if let problem = disagreement(c, keys: keys, device: phone, now: clock) {
                failures.append("FAIL \(name): \(problem)")
            }
        }
        return failures
    }

    /// Runs one vector case; returns how it disagrees, or nil.
    private static func disagreement(_ c: [String: Any], keys: [String: Data], device: Device, now: Date) -> String? {
        guard let want = c["want"] as? String,
              let push = c["push"] as? [String: Any],
              let data = push["data"] as? [String: String]
        else {
            return "the case is not shaped as expected"
        }
        let history = History()
        for seen in c["history"] as? [[String: String]] ?? [] {
            guard let broadcast = seen["broadcast"], let kind = seen["kind"].flatMap(Kind.init(rawValue:)) else {
                return "a history entry is not shaped as expected"
            }
            do {
                try history.admit(Claims(kind: kind, broadcast: broadcast))
            } catch {
                return "history: \(error)"
            }
        }
        var got = "ok"
        var claims: Claims?
        do {
            let verified = try verify(keys: keys, device: device, title: push["title"] as? String ?? "",
                                      body: push["body"] as? String ?? "", data: data, now: now)
            try history.admit(verified)
            claims = verified
        } catch let refusal as Refusal {
            got = refusal.code
        } catch {
            return "threw \(error), want \(want)"
        }
        if got != want {
            return "got \(got), want \(want)"
        }
        if let claims = claims, canonicalEncode(claims).base64EncodedString() != c["canonical"] as? String {
            return "canonical bytes differ"
        }
        return nil
    }
}
