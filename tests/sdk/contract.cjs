// The embedding flow and its errors, through ShapeDiver's own SDK
// (@shapediver/sdk.geometry-api-sdk-v2), against a running `strata serve`.
// tests/sdk.rs prepares the server and the credentials (in the
// environment), runs this, and checks what it prints: one JSON object.
'use strict';
const crypto = require('node:crypto');
const {
    Configuration,
    SessionApi,
    ModelApi,
    UtilsApi,
    processError,
    ResponseError,
} = require('@shapediver/sdk.geometry-api-sdk-v2');

const env = (name) => {
    const v = process.env[name];
    if (!v) throw new Error(`${name} is not set`);
    return v;
};
const base = env('STRATA_BASE');
const config = (accessToken) => new Configuration(accessToken ? { basePath: base, accessToken } : { basePath: base });

// What processError makes of a failed call, as the SDK's users see it.
async function failure(promise) {
    try {
        await promise;
        return { ok: true };
    } catch (e) {
        const r = await processError(e);
        return {
            isResponseError: r instanceof ResponseError,
            status: r.status,
            type: r.type,
            message: r.message,
            desc: r.description,
            retryAfter: e.response?.headers?.['retry-after'] ?? null,
        };
    }
}

(async () => {
    const out = {};
    const anonymous = config();
    const s = (await new SessionApi(anonymous).createSessionByTicket(env('TICKET'))).data;
    out.session = {
        sessionId: s.sessionId,
        modelId: s.model.id,
        modelStat: s.model.stat,
        exports: Object.keys(s.exports ?? {}),
    };
    const utils = new UtilsApi(anonymous);
    const done = await utils.submitAndWaitForExport(s.sessionId, { exports: ['model-stl'], parameters: {} }, 60000);
    const href = done.exports['model-stl'].content[0].href;
    const [download, kind] = utils.downloadAsset(href, { responseType: 'arraybuffer' });
    const bytes = Buffer.from((await download).data);
    out.download = { kind, size: bytes.length, sha256: crypto.createHash('sha256').update(bytes).digest('hex') };
    const manifestDone = await utils.submitAndWaitForExport(s.sessionId, { exports: ['print-manifest'], parameters: {} }, 60000);
    const [manifest] = utils.downloadAsset(manifestDone.exports['print-manifest'].content[0].href, { responseType: 'json' });
    out.manifest = { model_sha256: (await manifest).data.model_sha256 };

    const m = (await new ModelApi(config(env('JWT'))).getModel(env('MODEL_ID'))).data;
    out.model = { id: m.model.id, stat: m.model.stat };
    await new SessionApi(anonymous).closeSession(s.sessionId);

    out.errors = {
        sessionGone: await failure(new SessionApi(anonymous).closeSession(s.sessionId)),
        exportGone: await failure(utils.submitAndWaitForExport(s.sessionId, { exports: ['model-stl'], parameters: {} }, 5000)),
        revokedTicket: await failure(new SessionApi(anonymous).createSessionByTicket(env('REVOKED_TICKET'))),
        garbageTicket: await failure(new SessionApi(anonymous).createSessionByTicket('not.a.ticket')),
        unknownTicket: await failure(new SessionApi(anonymous).createSessionByTicket('not-a-ticket')),
        tokenMissing: await failure(new SessionApi(anonymous).createSessionByTicket(env('LOCKED_TICKET'))),
        jwtInvalid: await failure(new SessionApi(config('not.a.jwt')).createSessionByTicket(env('LOCKED_TICKET'))),
        jwtExpired: await failure(new ModelApi(config(env('EXPIRED_JWT'))).getModel(env('MODEL_ID'))),
        forbidden: await failure(new ModelApi(config(env('JWT_NO_SCOPE'))).getModel(env('MODEL_ID'))),
        notFound: await failure(new ModelApi(config(env('JWT_ANY_MODEL'))).getModel('00000000-0000-4000-8000-000000000000')),
    };
    // With a JWT, the locked model opens.
    const locked = (await new SessionApi(config(env('LOCKED_JWT'))).createSessionByTicket(env('LOCKED_TICKET'))).data;
    out.lockedSession = { modelId: locked.model.id };

    // Sessions per model per address are limited: the SDK sees 429 with
    // Retry-After. Its own Axios instance would wait out Retry-After and try
    // again (up to five times), so this part uses plain Axios.
    const noRetry = new Configuration({ basePath: base, useCustomAxios: false });
    let limited = null;
    for (let i = 0; i < 20 && limited === null; i++) {
        const r = await failure(new SessionApi(noRetry).createSessionByTicket(env('TICKET')));
        if (!r.ok) limited = r;
    }
    out.errors.rateLimited = limited;
    process.stdout.write(JSON.stringify(out) + '\n');
})().catch(async (e) => {
    const r = e && e.isAxiosError ? await processError(e) : e;
    process.stderr.write(`contract script failed: ${r && r.message} ${r && r.status} ${r && r.type}\n`);
    process.exit(1);
});
