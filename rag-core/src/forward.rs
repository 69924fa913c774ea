//! Forwarding impls so `&T`, `Box<T>` and `Arc<T>` of a backend are backends too.

/// Implements an object-safe async trait for `&T`, `Box<T>` and `Arc<T>` by forwarding every
/// method to `T`: the async methods, then (after `sync`) the plain ones with provided
/// defaults, which must be forwarded too or a wrapper would answer with the default.
macro_rules! forward_async_trait {
    ($trait:ident { $(fn $method:ident(&self $(, $arg:ident: $ty:ty)*) $(-> $ret:ty)?;)+ }
        $(sync { $(fn $smethod:ident(&self $(, $sarg:ident: $sty:ty)*) -> $sret:ty;)+ })?) => {
        forward_async_trait!(@impl [&'f T] 'f, $trait { $(fn $method(&self $(, $arg: $ty)*) $(-> $ret)?;)+ } [$($(fn $smethod(&self $(, $sarg: $sty)*) -> $sret;)+)?]);
        forward_async_trait!(@impl [Box<T>] 'f, $trait { $(fn $method(&self $(, $arg: $ty)*) $(-> $ret)?;)+ } [$($(fn $smethod(&self $(, $sarg: $sty)*) -> $sret;)+)?]);
        forward_async_trait!(@impl [std::sync::Arc<T>] 'f, $trait { $(fn $method(&self $(, $arg: $ty)*) $(-> $ret)?;)+ } [$($(fn $smethod(&self $(, $sarg: $sty)*) -> $sret;)+)?]);
    };
    (@impl [$($wrapper:tt)+] $lt:lifetime, $trait:ident { $(fn $method:ident(&self $(, $arg:ident: $ty:ty)*) $(-> $ret:ty)?;)+ }
        [$(fn $smethod:ident(&self $(, $sarg:ident: $sty:ty)*) -> $sret:ty;)*]) => {
        #[async_trait::async_trait]
        #[allow(single_use_lifetimes)]
        impl<$lt, T: $trait + ?Sized> $trait for $($wrapper)+ {
            $(
                async fn $method(&self $(, $arg: $ty)*) $(-> $ret)? {
                    (**self).$method($($arg),*).await
                }
            )+
            $(
                fn $smethod(&self $(, $sarg: $sty)*) -> $sret {
                    (**self).$smethod($($sarg),*)
                }
            )*
        }
    };
}

pub(crate) use forward_async_trait;
