// The one deadline for awaited work: whichever of the work and the expiry comes first wins. The timer is
// cleared as soon as the work settles; it does not keep the process alive unless the caller asks (keepAlive),
// for work that holds no handle of its own and must still be cut at the deadline.
export async function raceDeadline<T, E>(
  work: Promise<T>,
  ms: number,
  onExpiry: () => E,
  { keepAlive = false }: { keepAlive?: boolean } = {},
): Promise<T | E> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<E>((resolve, reject) => {
    timer = setTimeout(() => {
      try {
        resolve(onExpiry());
      } catch (fault) {
        reject(fault);
      }
    }, ms);
    if (!keepAlive) timer.unref();
  });
  try {
    return await Promise.race([work, expired]);
  } finally {
    clearTimeout(timer);
  }
}
