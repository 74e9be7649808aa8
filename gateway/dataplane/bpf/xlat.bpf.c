// SPDX-License-Identifier: GPL-2.0
/* CJB kernel fast path: the common case of the translator, in tc (clsact ingress).
 *
 * One object is loaded per tenant; its maps hold that tenant's ports, MTUs, counters
 * and IPv4 ID counter. Programs:
 *   cjb_tunnel_in    tunnel port ingress: unicast IPv4 TCP/UDP/ICMP echo -> IPv6
 *                    fe80::/96, redirected out of the service link; IPv6 -> native link
 *   cjb_service_in   service link ingress: the reverse (IPv6 fe80::/96 -> IPv4)
 *   cjb_native_in    native link ingress: everything back to the tunnel port
 *   cjb_*_skip       socket filters for the userspace worker's AF_PACKET sockets: packet
 *                    taps run before tc ingress, so the worker would see every frame the
 *                    fast path takes; these drop exactly those (the same predicate).
 * Anything the predicate does not accept returns TC_ACT_OK: the Python slow path (the
 * reference translator, gateway/xlat) handles it. The output must be byte-identical to
 * gateway/xlat/fast_path.py and icmp_map.echo_*; tests/test_bpf_differential.py holds
 * them together.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MOD 0xFFFF
/* Protocol numbers (IANA); linux/in.h clashes with the BPF target headers. */
#define IPPROTO_ICMP 1
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_ICMPV6 58
#define DF_THRESHOLD 1260 /* RFC 7915 §5.1: DF only on packets larger than this */
/* UDP ports whose payload the discovery ALG rewrites (gateway/xlat/alg/udp.py): slow path. */
#define MDNS_PORT 5353 /* RFC 6762 §3 */
#define SSDP_PORT 1900 /* UPnP Device Architecture §1.1.2 */
/* Frame layout of the common case; tests/test_bpf_constants.py compares every #define here
 * with the Python translator's constant of the same meaning. */
#define V4_L4_OFF 34 /* Ethernet + IPv4 header without options */
#define V6_L4_OFF 54 /* Ethernet + IPv6 fixed header */
#define TCP_CSUM_OFF 16 /* checksum field inside the transport header */
#define UDP_CSUM_OFF 6
#define ICMP_CSUM_OFF 2
#define FE80_0 0xfe /* fe80::/96: the first two octets; the next ten are zero */
#define FE80_1 0x80
#define ETH_P_IPV6_HI 0x86 /* EtherType IPv6, octet by octet */
#define ETH_P_IPV6_LO 0xdd

struct cjb_cfg {
	__u32 tunnel_ifindex;
	__u32 service_ifindex;
	__u32 native_ifindex; /* 0: no native IPv6 link */
	__u32 lan_mtu;
	__u32 service_mtu; /* also RFC 7915 §4.1 lowest-ipv6-mtu: one link is the whole path */
	__u32 enabled;     /* 0: pass everything (the loader fills the config first) */
	__u8 cloud_mac[2][6]; /* service and native link MACs; first all zero: no check */
};

/* Counter slots; cjb.gateway.dataplane.bpf.counters names them in the same order. */
enum {
	C_TO_SERVICE_FRAMES,
	C_TO_SERVICE_BYTES,
	C_TO_LAN_FRAMES,
	C_TO_LAN_BYTES,
	C_TO_NATIVE_FRAMES,
	C_TO_NATIVE_BYTES,
	C_FROM_NATIVE_FRAMES,
	C_FROM_NATIVE_BYTES,
	C_SLOW_TUNNEL,
	C_SLOW_SERVICE,
	C_ERRORS,
	C_COUNT,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cjb_cfg);
} cjb_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, C_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} cjb_stats SEC(".maps");

/* IPv4 IDs for DF-clear packets (RFC 6864 §4.2): a wrapping counter per tenant, like the
 * Python IdentificationSource. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} cjb_ipv4_id SEC(".maps");

static __always_inline void count(__u32 slot, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&cjb_stats, &slot);
	if (v)
		*v += n;
}

static __always_inline const struct cjb_cfg *config(void)
{
	__u32 zero = 0;
	const struct cjb_cfg *cfg = bpf_map_lookup_elem(&cjb_cfg, &zero);
	if (!cfg || !cfg->enabled)
		return 0;
	return cfg;
}

static __always_inline int unicast4(__u8 first)
{
	return first > 0 && first < 224 && first != 127;
}

static __always_inline int fe80_96(const __u8 *a)
{
	/* Byte by byte: the header sits at an unaligned stack offset. */
	__u8 acc = 0;
#pragma unroll
	for (int i = 2; i < 12; i++)
		acc |= a[i];
	return a[0] == FE80_0 && a[1] == FE80_1 && !acc;
}

static __always_inline int alg_port(struct __sk_buff *skb, __u32 l4_off)
{
	__u8 ports[4];
	if (bpf_skb_load_bytes(skb, l4_off, ports, 4))
		return 1;
	__u16 sport = (ports[0] << 8) | ports[1], dport = (ports[2] << 8) | ports[3];
	return sport == MDNS_PORT || sport == SSDP_PORT || dport == MDNS_PORT || dport == SSDP_PORT;
}

static __always_inline __u32 csum_offset(__u8 proto)
{
	if (proto == IPPROTO_TCP)
		return TCP_CSUM_OFF;
	if (proto == IPPROTO_UDP)
		return UDP_CSUM_OFF;
	if (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6)
		return ICMP_CSUM_OFF;
	return 0;
}

/* Bytes on the wire per segment: a GSO super-frame is checked by its segment size.
 * Whether bpf_skb_change_proto keeps gso_size (newer kernels) or shrinks it by 20, the
 * segments fit: the service link MTU is LAN MTU + 20 (docs/decisions/0003-service-mtu.md). */
static __always_inline __u32 segment_l3_len(struct __sk_buff *skb, __u32 l3_len, __u32 l3_hdr,
					    __u32 l4_hdr)
{
	if (skb->gso_size)
		return l3_hdr + l4_hdr + skb->gso_size;
	return l3_len;
}

/* ---------------------------------------------------------------- IPv4 -> IPv6 */

struct v4 {
	__u8 h[V4_L4_OFF];
	__u32 total;
	__u32 off; /* transport checksum offset */
	__u8 proto;
	__u8 icmp_type;
};

/* The predicate: mirrors ipv4_to_service_fast's preconditions (and, for ICMP echo,
 * the full path's), deferring anything else. */
static __always_inline int v4_fast(struct __sk_buff *skb, const struct cjb_cfg *cfg, struct v4 *p)
{
	__u8 *h = p->h;
	if (bpf_skb_load_bytes(skb, 0, h, V4_L4_OFF))
		return 0;
	if ((h[0] & 1) || h[12] != 0x08 || h[13] != 0x00 || h[14] != 0x45)
		return 0; /* multicast/broadcast MAC, not IPv4, or IPv4 options */
	__u32 total = (h[16] << 8) | h[17];
	__u32 flags_offset = (h[20] << 8) | h[21];
	__u8 proto = h[23];
	if (flags_offset & 0xBFFF)
		return 0; /* fragments and the reserved bit: slow path (RFC 7915 §4.1) */
	__u32 off = proto == IPPROTO_ICMP ? ICMP_CSUM_OFF : csum_offset(proto);
	if (!off || total + 14 > skb->len || total < 20 + off + 2)
		return 0;
	if (proto == IPPROTO_ICMP && total < 28)
		return 0;
	if (proto == IPPROTO_UDP && alg_port(skb, V4_L4_OFF))
		return 0;
	if (!unicast4(h[26]) || !unicast4(h[30]))
		return 0;
	__u32 sum = 0;
#pragma unroll
	for (int i = 14; i < V4_L4_OFF; i += 2)
		sum += (h[i] << 8) | h[i + 1];
	if (sum % MOD)
		return 0; /* bad header checksum: the full path names the drop */
	__u8 l4[2];
	__u32 l4_hdr = 8;
	if (proto == IPPROTO_TCP) {
		__u8 doff;
		if (bpf_skb_load_bytes(skb, V4_L4_OFF + 12, &doff, 1))
			return 0;
		l4_hdr = (doff >> 4) * 4;
	}
	if (40 + segment_l3_len(skb, total - 20, 0, l4_hdr) > cfg->service_mtu)
		return 0; /* too big: PMTU error or fragments, in the slow path */
	if (proto == IPPROTO_ICMP) {
		if (bpf_skb_load_bytes(skb, V4_L4_OFF, l4, 1))
			return 0;
		if (l4[0] != 8 && l4[0] != 0)
			return 0; /* only echo request/reply; errors quote packets */
		p->icmp_type = l4[0];
	} else {
		if (bpf_skb_load_bytes(skb, V4_L4_OFF + off, l4, 2))
			return 0;
		if (!l4[0] && !l4[1])
			return 0; /* zero checksum: RFC 7915 §4.5 policy, in the full path */
	}
	p->total = total;
	p->off = off;
	p->proto = proto;
	return 1;
}

struct v6hdr {
	__u8 eth_type[2];
	__u32 vtf;
	__u16 plen;
	__u8 nh;
	__u8 hlim;
	__u8 src[16];
	__u8 dst[16];
} __attribute__((packed));

struct pseudo6 {
	__u8 src[16];
	__u8 dst[16];
	__u32 len;
	__u32 nh;
};

static __always_inline int v4_to_v6(struct __sk_buff *skb, const struct cjb_cfg *cfg,
				    struct v4 *p)
{
	__u8 *h = p->h;
	__u32 len = skb->len;
	struct v6hdr out = {};
	out.eth_type[0] = ETH_P_IPV6_HI;
	out.eth_type[1] = ETH_P_IPV6_LO;
	out.vtf = bpf_htonl(0x60000000 | ((__u32)h[15] << 20));
	out.plen = bpf_htons(p->total - 20);
	out.nh = p->proto == IPPROTO_ICMP ? IPPROTO_ICMPV6 : p->proto;
	out.hlim = h[22]; /* copied, not decremented (docs/decisions/0002-no-ttl-decrement.md) */
	out.src[0] = FE80_0;
	out.src[1] = FE80_1;
	out.dst[0] = FE80_0;
	out.dst[1] = FE80_1;
	__builtin_memcpy(&out.src[12], &h[26], 4);
	__builtin_memcpy(&out.dst[12], &h[30], 4);

	if (len > 14 + p->total && bpf_skb_change_tail(skb, 14 + p->total, 0))
		return -1; /* strip Ethernet padding */
	if (p->proto == IPPROTO_ICMP) {
		/* RFC 7915 §4.2: echo 8/0 -> 128/129; ICMPv6 adds the pseudo-header, so the
		 * checksum is adjusted by it and by the type change (RFC 1624). */
		__u8 old_word[4] = {p->icmp_type, 0, 0, 0};
		struct {
			struct pseudo6 ph;
			__u8 word[4];
		} add = {};
		__u8 new_type = p->icmp_type == 8 ? 128 : 129;
		__u8 code;
		if (bpf_skb_load_bytes(skb, 35, &code, 1))
			return -1;
		old_word[1] = code;
		__builtin_memcpy(add.ph.src, out.src, 16);
		__builtin_memcpy(add.ph.dst, out.dst, 16);
		add.ph.len = bpf_htonl(p->total - 20);
		add.ph.nh = bpf_htonl(IPPROTO_ICMPV6);
		add.word[0] = new_type;
		add.word[1] = code;
		__s64 diff = bpf_csum_diff((__be32 *)old_word, 4, (__be32 *)&add, sizeof(add), 0);
		if (diff < 0 || bpf_l4_csum_replace(skb, 36, 0, diff, 0))
			return -1;
		if (bpf_skb_store_bytes(skb, V4_L4_OFF, &new_type, 1, 0))
			return -1;
	} else {
		/* TCP/UDP: only the pseudo-header addresses change (RFC 7915 §4.5). */
		__s64 diff = bpf_csum_diff((__be32 *)&h[26], 8, (__be32 *)out.src, 32, 0);
		__u64 flags = BPF_F_PSEUDO_HDR | (p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0);
		if (diff < 0 || bpf_l4_csum_replace(skb, V4_L4_OFF + p->off, 0, diff, flags))
			return -1;
	}
	if (bpf_skb_change_proto(skb, bpf_htons(ETH_P_IPV6), 0))
		return -1;
	if (bpf_skb_store_bytes(skb, 12, &out, sizeof(out), 0))
		return -1;
	return 0;
}

/* ---------------------------------------------------------------- IPv6 -> IPv4 */

struct v6 {
	__u8 h[V6_L4_OFF];
	__u32 plen;
	__u32 off;
	__u8 nh;
	__u8 icmp_type;
};

static __always_inline int v6_fast(struct __sk_buff *skb, const struct cjb_cfg *cfg, struct v6 *p)
{
	__u8 *h = p->h;
	if (bpf_skb_load_bytes(skb, 0, h, V6_L4_OFF))
		return 0;
	if ((h[0] & 1) || h[12] != ETH_P_IPV6_HI || h[13] != ETH_P_IPV6_LO || (h[14] >> 4) != 6)
		return 0;
	__u32 plen = (h[18] << 8) | h[19];
	__u8 nh = h[20];
	__u32 off = nh == IPPROTO_ICMPV6 ? ICMP_CSUM_OFF : csum_offset(nh);
	if (!off || nh == IPPROTO_ICMP)
		return 0; /* extension headers, fragments and other protocols: slow path */
	if (plen + V6_L4_OFF > skb->len || plen < off + 2 || plen + 20 > 0xFFFF)
		return 0; /* the last: a GSO super-frame whose IPv4 total length would not fit */
	if (nh == IPPROTO_ICMPV6 && plen < 8)
		return 0;
	if (nh == IPPROTO_UDP && alg_port(skb, V6_L4_OFF))
		return 0;
	if (!fe80_96(&h[22]) || !fe80_96(&h[38]))
		return 0;
	if (!unicast4(h[34]) || !unicast4(h[50]))
		return 0;
	__u32 l4_hdr = 8;
	if (nh == IPPROTO_TCP) {
		__u8 doff;
		if (bpf_skb_load_bytes(skb, V6_L4_OFF + 12, &doff, 1))
			return 0;
		l4_hdr = (doff >> 4) * 4;
	}
	__u32 total = segment_l3_len(skb, plen + 20, 20, l4_hdr);
	if (total > cfg->lan_mtu)
		return 0; /* too big: ICMPv6 Packet Too Big or fragments, in the slow path */
	if (skb->gso_size && total <= DF_THRESHOLD)
		return 0; /* DF-clear segments would all share one ID */
	__u8 l4[2];
	if (nh == IPPROTO_ICMPV6) {
		if (bpf_skb_load_bytes(skb, V6_L4_OFF, l4, 1))
			return 0;
		if (l4[0] != 128 && l4[0] != 129)
			return 0; /* NDP, MLD, errors: slow path */
		p->icmp_type = l4[0];
	} else {
		if (bpf_skb_load_bytes(skb, V6_L4_OFF + off, l4, 2))
			return 0;
		if (!l4[0] && !l4[1])
			return 0; /* invalid in IPv6 (RFC 8200 §8.1): the full path drops it */
	}
	p->plen = plen;
	p->off = off;
	p->nh = nh;
	return 1;
}

struct v4hdr {
	__u8 eth_type[2];
	__u8 words[20];
} __attribute__((packed));

static __always_inline int v6_to_v4(struct __sk_buff *skb, const struct cjb_cfg *cfg,
				    struct v6 *p)
{
	__u8 *h = p->h;
	__u32 total = p->plen + 20;
	__u8 proto = p->nh == IPPROTO_ICMPV6 ? IPPROTO_ICMP : p->nh;
	__u32 ident = 0;
	__u16 flags = 0x4000;
	/* RFC 7915 §5.1: DF only above 1260 bytes; smaller packets need a unique ID. */
	if (total <= DF_THRESHOLD) {
		__u32 zero = 0;
		__u32 *id = bpf_map_lookup_elem(&cjb_ipv4_id, &zero);
		if (!id)
			return -1;
		ident = __sync_fetch_and_add(id, 1) & 0xFFFF;
		flags = 0;
	}
	struct v4hdr out = {};
	__u8 *w = out.words;
	out.eth_type[0] = 0x08;
	w[0] = 0x45;
	w[1] = ((h[14] & 0x0f) << 4) | (h[15] >> 4); /* traffic class -> TOS */
	w[2] = total >> 8;
	w[3] = total & 0xff;
	w[4] = ident >> 8;
	w[5] = ident & 0xff;
	w[6] = flags >> 8;
	w[8] = h[21]; /* hop limit copied, not decremented (docs/decisions/0002-no-ttl-decrement.md) */
	w[9] = proto;
	__builtin_memcpy(&w[12], &h[34], 4);
	__builtin_memcpy(&w[16], &h[50], 4);
	__u32 sum = 0;
#pragma unroll
	for (int i = 0; i < 20; i += 2)
		sum += (w[i] << 8) | w[i + 1];
	__u32 hc = MOD - sum % MOD; /* as build_ipv4: a zero sum is sent as 0xFFFF */
	w[10] = hc >> 8;
	w[11] = hc & 0xff;

	if (skb->len > V6_L4_OFF + p->plen && bpf_skb_change_tail(skb, V6_L4_OFF + p->plen, 0))
		return -1;
	if (p->nh == IPPROTO_ICMPV6) {
		__u8 new_type = p->icmp_type == 128 ? 8 : 0;
		__u8 code;
		if (bpf_skb_load_bytes(skb, 55, &code, 1))
			return -1;
		struct {
			struct pseudo6 ph;
			__u8 word[4];
		} removed = {};
		__u8 new_word[4] = {new_type, code, 0, 0};
		__builtin_memcpy(removed.ph.src, &h[22], 16);
		__builtin_memcpy(removed.ph.dst, &h[38], 16);
		removed.ph.len = bpf_htonl(p->plen);
		removed.ph.nh = bpf_htonl(IPPROTO_ICMPV6);
		removed.word[0] = p->icmp_type;
		removed.word[1] = code;
		__s64 diff = bpf_csum_diff((__be32 *)&removed, sizeof(removed), (__be32 *)new_word,
					   4, 0);
		if (diff < 0 || bpf_l4_csum_replace(skb, 56, 0, diff, 0))
			return -1;
		if (bpf_skb_store_bytes(skb, V6_L4_OFF, &new_type, 1, 0))
			return -1;
	} else {
		__s64 diff = bpf_csum_diff((__be32 *)&h[22], 32, (__be32 *)&w[12], 8, 0);
		__u64 f = BPF_F_PSEUDO_HDR | (p->nh == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0);
		if (diff < 0 || bpf_l4_csum_replace(skb, V6_L4_OFF + p->off, 0, diff, f))
			return -1;
	}
	if (bpf_skb_change_proto(skb, bpf_htons(ETH_P_IP), 0))
		return -1;
	if (bpf_skb_store_bytes(skb, 12, &out, sizeof(out), 0))
		return -1;
	return 0;
}

/* ---------------------------------------------------------------- tc programs */

static __always_inline int is_ipv6(struct __sk_buff *skb)
{
	__u8 t[2];
	return !bpf_skb_load_bytes(skb, 12, t, 2) && t[0] == ETH_P_IPV6_HI && t[1] == ETH_P_IPV6_LO;
}

/* The worker's LAN guard (gateway/dataplane/lan_guard.py), mirrored: unicast from the
 * tunnel to a MAC that no cloud link owns is the LAN's unknown unicast; the slow path
 * drops and counts it ("unicast-not-for-cloud"), so it is never translated here. */
static __always_inline int same_mac(const __u8 *a, const __u8 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] &&
	       a[5] == b[5];
}

static __always_inline int for_cloud(struct __sk_buff *skb, const struct cjb_cfg *cfg)
{
	static const __u8 none[6] = {};
	__u8 d[6];
	if (bpf_skb_load_bytes(skb, 0, d, 6))
		return 0;
	if ((d[0] & 1) || same_mac(cfg->cloud_mac[0], none))
		return 1; /* broadcast/multicast (the I/G bit), or no MACs configured */
	return same_mac(d, cfg->cloud_mac[0]) || same_mac(d, cfg->cloud_mac[1]);
}

SEC("tc")
int cjb_tunnel_in(struct __sk_buff *skb)
{
	const struct cjb_cfg *cfg = config();
	if (!cfg)
		return TC_ACT_OK;
	__u32 len = skb->len;
	if (!for_cloud(skb, cfg)) {
		count(C_SLOW_TUNNEL, 1);
		return TC_ACT_OK;
	}
	if (cfg->native_ifindex && is_ipv6(skb)) {
		count(C_TO_NATIVE_FRAMES, 1);
		count(C_TO_NATIVE_BYTES, len);
		return bpf_redirect(cfg->native_ifindex, 0);
	}
	struct v4 p = {};
	if (!v4_fast(skb, cfg, &p)) {
		count(C_SLOW_TUNNEL, 1);
		return TC_ACT_OK;
	}
	if (v4_to_v6(skb, cfg, &p)) {
		count(C_ERRORS, 1);
		return TC_ACT_SHOT; /* the worker's filter already let it pass by: never twice */
	}
	count(C_TO_SERVICE_FRAMES, 1);
	count(C_TO_SERVICE_BYTES, len);
	return bpf_redirect(cfg->service_ifindex, 0);
}

SEC("tc")
int cjb_service_in(struct __sk_buff *skb)
{
	const struct cjb_cfg *cfg = config();
	if (!cfg)
		return TC_ACT_OK;
	__u32 len = skb->len;
	struct v6 p = {};
	if (!v6_fast(skb, cfg, &p)) {
		count(C_SLOW_SERVICE, 1);
		return TC_ACT_OK;
	}
	if (v6_to_v4(skb, cfg, &p)) {
		count(C_ERRORS, 1);
		return TC_ACT_SHOT;
	}
	count(C_TO_LAN_FRAMES, 1);
	count(C_TO_LAN_BYTES, len);
	return bpf_redirect(cfg->tunnel_ifindex, 0);
}

SEC("tc")
int cjb_native_in(struct __sk_buff *skb)
{
	const struct cjb_cfg *cfg = config();
	if (!cfg || !cfg->native_ifindex)
		return TC_ACT_OK;
	count(C_FROM_NATIVE_FRAMES, 1);
	count(C_FROM_NATIVE_BYTES, skb->len);
	return bpf_redirect(cfg->tunnel_ifindex, 0);
}

/* ---------------------------------------------------------------- worker socket filters
 * Return 0 (not for this socket) exactly when the tc program above takes the frame. */

SEC("socket")
int cjb_tunnel_skip(struct __sk_buff *skb)
{
	const struct cjb_cfg *cfg = config();
	if (!cfg)
		return skb->len;
	if (!for_cloud(skb, cfg))
		return skb->len;
	if (cfg->native_ifindex && is_ipv6(skb))
		return 0;
	struct v4 p = {};
	return v4_fast(skb, cfg, &p) ? 0 : skb->len;
}

SEC("socket")
int cjb_service_skip(struct __sk_buff *skb)
{
	const struct cjb_cfg *cfg = config();
	if (!cfg)
		return skb->len;
	struct v6 p = {};
	return v6_fast(skb, cfg, &p) ? 0 : skb->len;
}

SEC("socket")
int cjb_native_skip(struct __sk_buff *skb)
{
	const struct cjb_cfg *cfg = config();
	return cfg && cfg->native_ifindex ? 0 : skb->len;
}

char LICENSE[] SEC("license") = "GPL";
